//! Every request type, from arbitrary bytes through prost to the domain, as
//! the servers do it. The first byte picks the type. Properties: nothing
//! panics; whatever converts is valid by construction, so converting what it
//! turns back into (for orders and products, which have a wire form) gives
//! the same value.
#![no_main]

use grpc_api::{convert, wire};
use grpc_api::proto;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 9 {
        0 => {
            if let Ok(request) = proto::CreateOrderRequest::decode(bytes) {
                let _ = convert::new_order_from_wire(request);
            }
        }
        1 => {
            if let Ok(request) = proto::GetOrderRequest::decode(bytes) {
                if let Ok(id) = convert::order_id_from_wire(&request.order_id) {
                    assert_eq!(id.to_string(), request.order_id, "one spelling per id");
                }
            }
        }
        2 => {
            if let Ok(request) = proto::ListOrdersRequest::decode(bytes) {
                let _ = convert::user_id_from_wire(request.user_id);
                if !request.page_token.is_empty() {
                    let _ = convert::order_id_from_wire(&request.page_token);
                }
            }
        }
        3 => {
            if let Ok(request) = proto::UpdateOrderStatusRequest::decode(bytes) {
                let _ = convert::order_id_from_wire(&request.order_id);
                let _ = convert::order_status_from_wire(request.status);
            }
        }
        4 => {
            if let Ok(product) = proto::Product::decode(bytes) {
                if let Ok(parsed) = convert::product_from_wire(product) {
                    let again = convert::product_from_wire(convert::product_to_wire(&parsed));
                    assert_eq!(again.ok(), Some(parsed), "a product survives the wire");
                }
            }
        }
        5 => {
            if let Ok(request) = proto::GetProductRequest::decode(bytes) {
                let _ = convert::product_id_from_wire(request.product_id);
            }
        }
        6 => {
            if let Ok(request) = proto::GetPrimaryWarehouseRequest::decode(bytes) {
                let _ = convert::product_id_from_wire(request.product_id);
            }
        }
        7 => {
            if let Ok(event) = wire::Event::decode(bytes) {
                if let Ok(parsed) = convert::event_from_wire(event, None) {
                    // A valid event always has a stored form that loads back.
                    let json = parsed.to_json().expect("a valid event serialises");
                    let loaded = domain::Event::from_json(&json).expect("and loads");
                    assert_eq!(loaded, parsed);
                }
            }
        }
        _ => {
            if let Ok(batch) = wire::EventBatch::decode(bytes) {
                let _ = convert::event_batch_from_wire(batch);
            }
        }
    }
});
