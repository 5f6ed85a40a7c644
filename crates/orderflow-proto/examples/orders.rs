//! Creates an order, reads it back, and shows what a program reads from an
//! error: the reason and the field.
//!
//! ```text
//! cargo run -p server &                          # a server on 127.0.0.1:50051
//! cargo run -p orderflow-proto --example orders  # [ENDPOINT [TOKEN]]
//! ```

use orderflow_proto::proto::{CreateOrderRequest, GetOrderRequest, OrderLine};
use orderflow_proto::{Client, Reason};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let mut builder = Client::builder(endpoint);
    if let Some(token) = args.next() {
        builder = builder.bearer_token(token);
    }
    let client = builder.connect().await?;
    let mut orders = client.orders();

    let request = CreateOrderRequest {
        user_id: "example-user".into(),
        lines: vec![OrderLine {
            product_id: "kettle".into(),
            quantity: 1,
            unit_price_cents: 2_999,
        }],
        currency: "EUR".into(),
        // The same key on a retry returns the same order.
        idempotency_key: "example-order-1".into(),
    };
    let created = orders.create_order(request.clone()).await?.into_inner();
    println!(
        "created {} at version {}",
        created.order_id, created.version
    );
    let read = orders
        .get_order(GetOrderRequest {
            order_id: created.order_id.clone(),
        })
        .await?
        .into_inner();
    println!(
        "read back: {} line(s), total {}",
        read.lines.len(),
        read.total_cents
    );

    // A bad request: the reason and the field are data, not English.
    let bad = CreateOrderRequest {
        currency: "euros".into(),
        idempotency_key: String::new(),
        ..request
    };
    match orders.create_order(bad).await {
        Ok(_) => println!("unexpectedly accepted"),
        Err(status) => {
            let details = orderflow_proto::details(&status);
            let field = details
                .bad_request()
                .and_then(|bad| bad.field_violations.first())
                .map(|violation| violation.field.clone());
            println!(
                "refused: {:?} {:?} field={field:?} ({})",
                status.code(),
                orderflow_proto::reason(&status).map(Reason::as_str),
                status.message()
            );
        }
    }
    Ok(())
}
