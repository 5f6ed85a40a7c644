//! The catalog: the [`CatalogRepository`] trait and its diesel implementation.
//! A product and its warehouses are written together in one transaction.

use std::future::Future;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use domain::{Product, ProductId, ProductName, Sku, Warehouse, WarehouseId, WarehouseName};

use crate::StorageError;
use crate::db::{Database, InsertRows, insert_rows, with_conn, write_transaction};
use crate::schema::{products, warehouses};

/// Products and their warehouses.
pub trait CatalogRepository: Send + Sync + 'static {
    /// Inserts or replaces a product and its whole warehouse list,
    /// atomically. A SKU owned by another product is `Conflict::Duplicate`.
    fn upsert_product(
        &self,
        product: Product,
    ) -> impl Future<Output = Result<Product, StorageError>> + Send;

    /// The product with `id`. Products without a primary warehouse load
    /// fine; only [`Product::primary_warehouse`] reports the gap.
    fn get_product(
        &self,
        id: &ProductId,
    ) -> impl Future<Output = Result<Product, StorageError>> + Send;
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = products)]
struct ProductRow {
    product_id: String,
    sku: String,
    name: String,
    updated_at: NaiveDateTime,
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = warehouses)]
struct WarehouseRow {
    product_id: String,
    warehouse_id: String,
    position: i32,
    name: String,
    is_primary: bool,
}

insert_rows!(WarehouseRow => warehouses::table);

fn corrupt(id: &str, what: impl std::fmt::Display) -> StorageError {
    StorageError::Internal(format!("stored product {id} is unreadable: {what}"))
}

fn restore(row: ProductRow, rows: Vec<WarehouseRow>) -> Result<Product, StorageError> {
    let id = row.product_id.clone();
    let bad = |e: domain::DomainError| corrupt(&id, e);
    let warehouses = rows
        .into_iter()
        .map(|w| {
            Ok(Warehouse {
                id: WarehouseId::parse(w.warehouse_id).map_err(bad)?,
                name: WarehouseName::parse(w.name).map_err(bad)?,
                is_primary: w.is_primary,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Product::new(
        ProductId::parse(row.product_id).map_err(bad)?,
        Sku::parse(row.sku).map_err(bad)?,
        ProductName::parse(row.name).map_err(bad)?,
        warehouses,
    )
    .map_err(bad)
}

impl CatalogRepository for Database {
    #[tracing::instrument(
        name = "UPSERT products",
        skip_all,
        fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "UPSERT", db.collection.name = "products")
    )]
    async fn upsert_product(&self, product: Product) -> Result<Product, StorageError> {
        let id = product.id().to_string();
        let row = ProductRow {
            product_id: id.clone(),
            sku: product.sku().to_string(),
            name: product.name().to_string(),
            updated_at: Utc::now().trunc_subsecs(6).naive_utc(),
        };
        let rows = product
            .warehouses()
            .iter()
            .enumerate()
            .map(|(position, w)| {
                Ok(WarehouseRow {
                    product_id: id.clone(),
                    warehouse_id: w.id.to_string(),
                    position: i32::try_from(position)
                        .map_err(|e| StorageError::Invalid(e.to_string()))?,
                    name: w.name.to_string(),
                    is_primary: w.is_primary,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                diesel::insert_into(products::table)
                    .values(&row)
                    .on_conflict(products::product_id)
                    .do_update()
                    .set((
                        products::sku.eq(excluded(products::sku)),
                        products::name.eq(excluded(products::name)),
                        products::updated_at.eq(excluded(products::updated_at)),
                    ))
                    .execute(c)
                    .await?;
                diesel::delete(warehouses::table.filter(warehouses::product_id.eq(&id)))
                    .execute(c)
                    .await?;
                if !rows.is_empty() {
                    c.insert_rows(rows).await?;
                }
                Ok::<_, StorageError>(())
            })
        })
        .await?;
        Ok(product)
    }

    #[tracing::instrument(
        name = "SELECT products",
        skip_all,
        fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "SELECT", db.collection.name = "products")
    )]
    async fn get_product(&self, id: &ProductId) -> Result<Product, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let (row, rows) = with_conn!(&mut conn, |c| {
                let row: Option<ProductRow> = products::table
                    .find(id.as_str())
                    .select(ProductRow::as_select())
                    .first(c)
                    .await
                    .optional()?;
                let rows: Vec<WarehouseRow> = warehouses::table
                    .filter(warehouses::product_id.eq(id.as_str()))
                    .order(warehouses::position)
                    .select(WarehouseRow::as_select())
                    .load(c)
                    .await?;
                Ok::<_, StorageError>((row, rows))
            })?;
            let row = row.ok_or_else(|| StorageError::NotFound {
                entity: "product",
                id: id.to_string(),
            })?;
            restore(row, rows)
        })
        .await
    }
}
