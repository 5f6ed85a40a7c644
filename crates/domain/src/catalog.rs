//! The catalog: products and the warehouses that stock them.
//!
//! At most one warehouse per product is primary; a product built with more is
//! rejected. Zero primaries is legal to hold (old migrations made such
//! products, and they store and load fine) and surfaces as
//! [`DomainError::NoPrimaryWarehouse`] only from
//! [`Product::primary_warehouse`].

use std::collections::HashSet;

use crate::text::bounded_text;
use crate::{DomainError, ProductId, Sku, WarehouseId};

bounded_text!(
    /// A product's display name: 1..=256 printable characters.
    ProductName, field = "name", max = 256, charset = Printable
);
bounded_text!(
    /// A warehouse's display name: 1..=256 printable characters.
    WarehouseName, field = "name", max = 256, charset = Printable
);

/// A place that stocks a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warehouse {
    /// Its id, unique within the product.
    pub id: WarehouseId,
    /// Its display name.
    pub name: WarehouseName,
    /// Whether orders ship from here by default.
    pub is_primary: bool,
}

/// Something that can be ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    id: ProductId,
    sku: Sku,
    name: ProductName,
    warehouses: Vec<Warehouse>,
}

impl Product {
    /// A product; more than one primary warehouse, or one warehouse listed
    /// twice, is rejected.
    pub fn new(
        id: ProductId,
        sku: Sku,
        name: ProductName,
        warehouses: Vec<Warehouse>,
    ) -> Result<Self, DomainError> {
        let primaries = warehouses.iter().filter(|w| w.is_primary).count();
        if primaries > 1 {
            return Err(DomainError::MultiplePrimaryWarehouses {
                product: id,
                count: primaries,
            });
        }
        let mut seen = HashSet::with_capacity(warehouses.len());
        if let Some(dup) = warehouses.iter().find(|w| !seen.insert(&w.id)) {
            return Err(DomainError::invalid(
                "warehouses",
                format!("lists warehouse {} more than once", dup.id),
            ));
        }
        Ok(Self {
            id,
            sku,
            name,
            warehouses,
        })
    }

    /// The warehouse orders ship from, or the gap as an error.
    pub fn primary_warehouse(&self) -> Result<&Warehouse, DomainError> {
        self.warehouses
            .iter()
            .find(|w| w.is_primary)
            .ok_or_else(|| DomainError::NoPrimaryWarehouse(self.id.clone()))
    }

    /// Its id.
    pub fn id(&self) -> &ProductId {
        &self.id
    }

    /// Its SKU.
    pub fn sku(&self) -> &Sku {
        &self.sku
    }

    /// Its display name.
    pub fn name(&self) -> &ProductName {
        &self.name
    }

    /// Its warehouses, in the order given.
    pub fn warehouses(&self) -> &[Warehouse] {
        &self.warehouses
    }
}

#[cfg(test)]
mod tests;
