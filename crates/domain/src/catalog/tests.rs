use super::*;

fn warehouse(id: &str, is_primary: bool) -> Warehouse {
    Warehouse {
        id: WarehouseId::parse(id).unwrap(),
        name: WarehouseName::parse(format!("Warehouse {id}")).unwrap(),
        is_primary,
    }
}

fn product(warehouses: Vec<Warehouse>) -> Result<Product, DomainError> {
    Product::new(
        ProductId::parse("p-1").unwrap(),
        Sku::parse("SKU-1").unwrap(),
        ProductName::parse("Kettle").unwrap(),
        warehouses,
    )
}

#[test]
fn primary_warehouse_is_found() {
    let p = product(vec![warehouse("w1", false), warehouse("w2", true)]).unwrap();
    assert_eq!(p.primary_warehouse().unwrap().id.as_str(), "w2");
}

#[test]
fn missing_primary_is_an_error_naming_the_product_not_a_panic() {
    for warehouses in [vec![], vec![warehouse("w1", false)]] {
        let p = product(warehouses).unwrap();
        let err = p.primary_warehouse().unwrap_err();
        assert_eq!(
            err,
            DomainError::NoPrimaryWarehouse(ProductId::parse("p-1").unwrap())
        );
        assert_eq!(err.to_string(), "product p-1 has no primary warehouse");
    }
}

#[test]
fn more_than_one_primary_is_rejected_at_construction() {
    let err = product(vec![warehouse("w1", true), warehouse("w2", true)]).unwrap_err();
    assert!(matches!(
        err,
        DomainError::MultiplePrimaryWarehouses { count: 2, .. }
    ));
}

#[test]
fn a_warehouse_listed_twice_is_rejected() {
    let err = product(vec![warehouse("w1", true), warehouse("w1", false)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid warehouses: lists warehouse w1 more than once"
    );
}
