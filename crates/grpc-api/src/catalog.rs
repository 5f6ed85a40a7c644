//! `orderflow.v1.CatalogService`: products and their warehouses.

use storage::CatalogRepository;
use tonic::{Request, Response, Status};

use crate::audit::Trail;
use crate::proto::catalog_service_server::CatalogService;
use crate::proto::{GetPrimaryWarehouseRequest, GetProductRequest, Product, Warehouse};
use crate::{convert, status};

/// The catalog service over a repository.
pub struct CatalogApi<C> {
    catalog: C,
}

impl<C: CatalogRepository> CatalogApi<C> {
    /// Serves `catalog`.
    pub fn new(catalog: C) -> Self {
        Self { catalog }
    }
}

#[tonic::async_trait]
impl<C: CatalogRepository> CatalogService for CatalogApi<C> {
    async fn upsert_product(&self, request: Request<Product>) -> Result<Response<Product>, Status> {
        let trail = Trail::of(&request);
        let product = convert::product_from_wire(request.into_inner())?;
        trail.product(product.id().as_str());
        let stored = self
            .catalog
            .upsert_product(product)
            .await
            .map_err(status::storage)?;
        Ok(Response::new(convert::product_to_wire(&stored)))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let id = convert::product_id_from_wire(request.into_inner().product_id)?;
        let product = self
            .catalog
            .get_product(&id)
            .await
            .map_err(status::storage)?;
        Ok(Response::new(convert::product_to_wire(&product)))
    }

    async fn get_primary_warehouse(
        &self,
        request: Request<GetPrimaryWarehouseRequest>,
    ) -> Result<Response<Warehouse>, Status> {
        let id = convert::product_id_from_wire(request.into_inner().product_id)?;
        let product = self
            .catalog
            .get_product(&id)
            .await
            .map_err(status::storage)?;
        let primary = product.primary_warehouse().map_err(status::domain)?;
        Ok(Response::new(convert::warehouse_to_wire(primary)))
    }
}
