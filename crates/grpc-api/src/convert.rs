//! Conversions between the wire types and the domain, validating as they
//! go: every rejection is INVALID_ARGUMENT naming the field, as the domain's
//! constructors report it.

use chrono::{DateTime, Utc};
use domain::{
    Action, Attributes, Cents, Currency, Event, EventId, IdempotencyKey, NewOrder, Order, OrderId,
    OrderLine, OrderStatus, Product, ProductId, ProductName, Quantity, Sku, Timestamp, UserId,
    Warehouse, WarehouseId, WarehouseName,
};
use tonic::Status;
use transform_engine::{LogBatch, MAX_BATCH_EVENTS};

use crate::status;
use crate::{proto, wire};

/// A validated request value, or the INVALID_ARGUMENT status naming what is
/// wrong.
pub type Parsed<T> = Result<T, Status>;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    status::invalid_field(field, reason)
}

/// An order id from a request field.
pub fn order_id_from_wire(value: &str) -> Parsed<OrderId> {
    OrderId::parse(value).map_err(status::domain)
}

/// A user id from a request field.
pub fn user_id_from_wire(value: String) -> Parsed<UserId> {
    UserId::parse(value).map_err(status::domain)
}

/// A product id from a request field.
pub fn product_id_from_wire(value: String) -> Parsed<ProductId> {
    ProductId::parse(value).map_err(status::domain)
}

/// CreateOrder's request, validated.
pub fn new_order_from_wire(request: proto::CreateOrderRequest) -> Parsed<NewOrder> {
    let user = user_id_from_wire(request.user_id)?;
    let lines = request
        .lines
        .into_iter()
        .enumerate()
        .map(|(n, line)| {
            let field = format!("lines[{n}]");
            OrderLine::new(
                &field,
                ProductId::parse_field(&format!("{field}.product_id"), line.product_id)
                    .map_err(status::domain)?,
                Quantity::parse_field(&format!("{field}.quantity"), line.quantity)
                    .map_err(status::domain)?,
                Cents::new(line.unit_price_cents),
            )
            .map_err(status::domain)
        })
        .collect::<Parsed<Vec<_>>>()?;
    let currency = Currency::parse(&request.currency).map_err(status::domain)?;
    let key = match request.idempotency_key.as_str() {
        "" => None,
        _ => Some(IdempotencyKey::parse(request.idempotency_key).map_err(status::domain)?),
    };
    NewOrder::new(user, lines, currency, key).map_err(status::domain)
}

/// A status from the wire; UNSPECIFIED and unknown numbers are rejected.
pub fn order_status_from_wire(value: i32) -> Parsed<OrderStatus> {
    match proto::OrderStatus::try_from(value) {
        Ok(proto::OrderStatus::Pending) => Ok(OrderStatus::Pending),
        Ok(proto::OrderStatus::Paid) => Ok(OrderStatus::Paid),
        Ok(proto::OrderStatus::Shipped) => Ok(OrderStatus::Shipped),
        Ok(proto::OrderStatus::Delivered) => Ok(OrderStatus::Delivered),
        Ok(proto::OrderStatus::Cancelled) => Ok(OrderStatus::Cancelled),
        Ok(proto::OrderStatus::Unspecified) => Err(invalid("status", "must be set")),
        Err(_) => Err(invalid("status", format!("{value} is not an order status"))),
    }
}

pub(crate) fn wire_status(status: OrderStatus) -> proto::OrderStatus {
    match status {
        OrderStatus::Pending => proto::OrderStatus::Pending,
        OrderStatus::Paid => proto::OrderStatus::Paid,
        OrderStatus::Shipped => proto::OrderStatus::Shipped,
        OrderStatus::Delivered => proto::OrderStatus::Delivered,
        OrderStatus::Cancelled => proto::OrderStatus::Cancelled,
    }
}

fn wire_time(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// An order for the wire.
pub fn order_to_wire(order: &Order) -> proto::Order {
    proto::Order {
        order_id: order.id().to_string(),
        user_id: order.user_id().to_string(),
        status: wire_status(order.status()).into(),
        lines: order
            .lines()
            .iter()
            .map(|line| proto::OrderLine {
                product_id: line.product_id().to_string(),
                quantity: line.quantity().get(),
                unit_price_cents: line.unit_price().get(),
            })
            .collect(),
        total_cents: order.total().get(),
        currency: order.currency().to_string(),
        created_at: Some(wire_time(order.created_at())),
        updated_at: Some(wire_time(order.updated_at())),
        version: order.version(),
    }
}

/// A product from the wire, validated (more than one primary warehouse is
/// INVALID_ARGUMENT).
pub fn product_from_wire(product: proto::Product) -> Parsed<Product> {
    let warehouses = product
        .warehouses
        .into_iter()
        .enumerate()
        .map(|(n, w)| {
            Ok(Warehouse {
                id: WarehouseId::parse_field(
                    &format!("warehouses[{n}].warehouse_id"),
                    w.warehouse_id,
                )
                .map_err(status::domain)?,
                name: WarehouseName::parse_field(&format!("warehouses[{n}].name"), w.name)
                    .map_err(status::domain)?,
                is_primary: w.is_primary,
            })
        })
        .collect::<Parsed<Vec<_>>>()?;
    Product::new(
        product_id_from_wire(product.product_id)?,
        Sku::parse(product.sku).map_err(status::domain)?,
        ProductName::parse(product.name).map_err(status::domain)?,
        warehouses,
    )
    .map_err(status::domain)
}

/// A warehouse for the wire.
pub fn warehouse_to_wire(warehouse: &Warehouse) -> proto::Warehouse {
    proto::Warehouse {
        warehouse_id: warehouse.id.to_string(),
        name: warehouse.name.to_string(),
        is_primary: warehouse.is_primary,
    }
}

/// A product for the wire.
pub fn product_to_wire(product: &Product) -> proto::Product {
    proto::Product {
        product_id: product.id().to_string(),
        sku: product.sku().to_string(),
        name: product.name().to_string(),
        warehouses: product.warehouses().iter().map(warehouse_to_wire).collect(),
    }
}

/// An event from the wire, validated; on a stream or in a batch, `index`
/// names it in errors (`events[3].user_id`).
pub fn event_from_wire(mut event: wire::Event, index: Option<usize>) -> Parsed<Event> {
    event_from_wire_mut(&mut event, index)
}

/// [`event_from_wire`], taking the fields out of `event` (its strings and
/// attribute list keep their room, for the next event read into it).
pub fn event_from_wire_mut(event: &mut wire::Event, index: Option<usize>) -> Parsed<Event> {
    // Full field names are spelled out only for an error: this runs for
    // every event of every batch.
    let field = |name: &str| match index {
        Some(i) => format!("events[{i}].{name}"),
        None => name.to_owned(),
    };
    let named = |error: domain::DomainError| match error {
        domain::DomainError::InvalidField {
            field: name,
            reason,
        } => status::domain(domain::DomainError::InvalidField {
            field: field(&name),
            reason,
        }),
        other => status::domain(other),
    };
    // The ids are copied out (inline in the domain's ids when short), so
    // the wire event's strings keep their room for the next event.
    let event_id = match event.event_id.as_str() {
        "" => None,
        id => Some(EventId::parse_field("event_id", id).map_err(named)?),
    };
    let user_id = UserId::parse_field("user_id", event.user_id.as_str()).map_err(named)?;
    let action =
        Action::parse(&event.action).map_err(|e| invalid(&field("action"), strip(&e, "action")))?;
    let occurred_at = event
        .occurred_at
        .take()
        .map(|at| {
            let nanos = u32::try_from(at.nanos)
                .map_err(|_| invalid(&field("occurred_at"), "nanos out of range"))?;
            DateTime::from_timestamp(at.seconds, nanos)
                .filter(|t| (1..=9999).contains(&chrono::Datelike::year(t)))
                .map(Timestamp::from_datetime)
                .ok_or_else(|| invalid(&field("occurred_at"), "outside years 1..=9999"))
        })
        .transpose()?;
    let entries = event.attributes.drain(..).map(|e| (e.key, e.value));
    let attributes = Attributes::from_client("attributes", entries).map_err(named)?;
    let mut out = Event::new(user_id, action);
    out.event_id = event_id;
    out.occurred_at = occurred_at;
    out.amount_cents = event.amount_cents.take().map(Cents::new);
    out.attributes = attributes;
    Ok(out)
}

/// A stored event for the wire (SubscribeEvents): every field as stored.
/// A leap second's nanoseconds (1,000,000,000 and up in the stored form)
/// become the last nanosecond of the second, all `Timestamp` can say.
pub fn event_to_wire(event: &Event) -> proto::Event {
    proto::Event {
        event_id: event
            .event_id
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        user_id: event.user_id.as_str().to_owned(),
        action: event.action.as_str().to_owned(),
        occurred_at: event.occurred_at.as_ref().map(|at| {
            let (seconds, nanos, _) = at.to_parts();
            prost_types::Timestamp {
                seconds,
                nanos: i32::try_from(nanos.min(999_999_999)).unwrap_or(0),
            }
        }),
        amount_cents: event.amount_cents.map(Cents::get),
        attributes: event
            .attributes
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    }
}

/// When an event was stored, for the wire.
pub fn stored_at_to_wire(at: DateTime<Utc>) -> prost_types::Timestamp {
    wire_time(at)
}

/// Longest `producer_id`, in characters.
const MAX_PRODUCER_ID: usize = 128;

/// A batch for acknowledged ingest from the wire, validated whole: any
/// invalid event rejects the batch, naming `events[i].field`.
pub fn event_batch_from_wire(batch: wire::EventBatch) -> Parsed<LogBatch> {
    let producer_chars = batch.producer_id.chars().count();
    if producer_chars > MAX_PRODUCER_ID {
        return Err(invalid(
            "producer_id",
            format!("{producer_chars} characters, at most {MAX_PRODUCER_ID}"),
        ));
    }
    if batch.sequence == 0 {
        return Err(invalid("sequence", "must be at least 1"));
    }
    match batch.events.received() {
        0 => return Err(invalid("events", "a batch needs at least one event")),
        n if n > MAX_BATCH_EVENTS => {
            return Err(invalid(
                "events",
                format!("{n} events, at most {MAX_BATCH_EVENTS} per batch"),
            ));
        }
        _ => {}
    }
    // Converted as they were decoded (`wire::BatchEvents`).
    let events = batch.events.into_events()?;
    let producer = (!batch.producer_id.is_empty()).then_some((batch.producer_id, batch.sequence));
    Ok(LogBatch { producer, events })
}

/// The reason part of a domain error's message (`invalid X: reason`).
fn strip(error: &domain::DomainError, field: &str) -> String {
    let text = error.to_string();
    text.strip_prefix(&format!("invalid {field}: "))
        .map_or(text.clone(), str::to_owned)
}

/// Page tokens: opaque, and bound to the listing that issued them.
///
/// A token is URL-safe base64 of a version byte, the last order id of the
/// page, the request's `page_size`, and a 64-bit FNV-1a hash of its
/// `user_id`. A token presented with another `user_id` or `page_size` is
/// INVALID_ARGUMENT: it would page some other listing. (The binding catches
/// client mistakes; it is not a secret, and listing is open to every
/// caller anyway.)
const PAGE_TOKEN_VERSION: u8 = 1;

/// The token for the page after `last`.
pub fn page_token_to_wire(last: OrderId, user: &UserId, page_size: u32) -> String {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(29);
    bytes.push(PAGE_TOKEN_VERSION);
    bytes.extend_from_slice(last.as_bytes());
    bytes.extend_from_slice(&page_size.to_be_bytes());
    bytes.extend_from_slice(&fnv1a(user.as_str().as_bytes()).to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Where the listing continues: `None` for an empty token (the first page).
pub fn page_token_from_wire(token: &str, user: &UserId, page_size: u32) -> Parsed<Option<OrderId>> {
    use base64::Engine as _;
    if token.is_empty() {
        return Ok(None);
    }
    let not_ours = || {
        invalid(
            "page_token",
            format!("{} is not a token this server issued", domain::quote(token)),
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| not_ours())?;
    let (&[version], rest) = bytes.split_first_chunk::<1>().ok_or_else(not_ours)?;
    let (id, rest) = rest.split_first_chunk::<16>().ok_or_else(not_ours)?;
    let (size, rest) = rest.split_first_chunk::<4>().ok_or_else(not_ours)?;
    let hash: [u8; 8] = rest.try_into().map_err(|_| not_ours())?;
    if version != PAGE_TOKEN_VERSION {
        return Err(not_ours());
    }
    if u32::from_be_bytes(*size) != page_size
        || u64::from_be_bytes(hash) != fnv1a(user.as_str().as_bytes())
    {
        return Err(invalid(
            "page_token",
            "was issued for another user_id or page_size; list again from the first page",
        ));
    }
    Ok(Some(OrderId::from_bytes(*id)))
}

/// 64-bit FNV-1a: stable across releases and replicas (std's hasher is
/// not promised to be).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
