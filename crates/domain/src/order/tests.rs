use super::*;

fn line(price: i64, quantity: u32) -> OrderLine {
    OrderLine::new(
        "lines[0]",
        ProductId::parse("p-1").unwrap(),
        Quantity::parse_field("lines[0].quantity", quantity).unwrap(),
        Cents::new(price),
    )
    .unwrap()
}

fn new_order(lines: Vec<OrderLine>) -> Result<NewOrder, DomainError> {
    NewOrder::new(
        UserId::parse("u-1").unwrap(),
        lines,
        Currency::parse("EUR").unwrap(),
        None,
    )
}

#[test]
fn transitions_follow_the_contract_exactly() {
    use OrderStatus::*;
    let legal = [
        (Pending, Paid),
        (Pending, Cancelled),
        (Paid, Shipped),
        (Paid, Cancelled),
        (Shipped, Delivered),
    ];
    for from in OrderStatus::ALL {
        for to in OrderStatus::ALL {
            assert_eq!(
                from.can_become(to),
                legal.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }
    assert_eq!(
        Delivered.transition(Pending).unwrap_err().to_string(),
        "illegal status transition from delivered to pending"
    );
}

#[test]
fn status_round_trips_its_stored_spelling() {
    for status in OrderStatus::ALL {
        assert_eq!(status.as_str().parse::<OrderStatus>().unwrap(), status);
    }
    assert!("PAID".parse::<OrderStatus>().is_err());
}

#[test]
fn quantity_and_price_bounds_name_the_field() {
    assert_eq!(
        Quantity::parse_field("lines[4].quantity", 0)
            .unwrap_err()
            .to_string(),
        "invalid lines[4].quantity: must be at least 1"
    );
    let err = OrderLine::new(
        "lines[1]",
        ProductId::parse("p").unwrap(),
        Quantity::parse_field("q", 1).unwrap(),
        Cents::new(-1),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid lines[1].unit_price_cents: is -1, must not be negative"
    );
}

#[test]
fn line_count_is_bounded() {
    assert!(
        new_order(vec![])
            .unwrap_err()
            .to_string()
            .starts_with("invalid lines:")
    );
    assert!(new_order(vec![line(1, 1); MAX_ORDER_LINES]).is_ok());
    assert!(new_order(vec![line(1, 1); MAX_ORDER_LINES + 1]).is_err());
}

#[test]
fn total_is_checked_for_overflow() {
    assert_eq!(
        new_order(vec![line(250, 3), line(1, 1)]).unwrap().total(),
        Cents::new(751)
    );
    let err = new_order(vec![line(i64::MAX, 1), line(1, 1)]).unwrap_err();
    assert!(err.to_string().starts_with("invalid total_cents:"), "{err}");
    assert!(new_order(vec![line(i64::MAX / 2, 3)]).is_err());
}

#[test]
fn status_change_bumps_the_version_and_rejects_illegal_moves() {
    let now = Utc::now();
    let order = Order::place(
        OrderId::generate(),
        new_order(vec![line(5, 2)]).unwrap(),
        now,
    );
    assert_eq!((order.status(), order.version()), (OrderStatus::Pending, 1));
    let paid = order.with_status(OrderStatus::Paid, now).unwrap();
    assert_eq!((paid.status(), paid.version()), (OrderStatus::Paid, 2));
    assert!(paid.with_status(OrderStatus::Delivered, now).is_err());
}

#[test]
fn restore_rejects_a_total_that_disagrees_with_the_lines() {
    let now = Utc::now();
    let parts = |total| RestoredOrder {
        id: OrderId::generate(),
        user_id: UserId::parse("u").unwrap(),
        status: OrderStatus::Paid,
        lines: vec![line(5, 2)],
        total: Cents::new(total),
        currency: Currency::parse("USD").unwrap(),
        created_at: now,
        updated_at: now,
        version: 3,
    };
    assert_eq!(Order::restore(parts(10)).unwrap().version(), 3);
    let err = Order::restore(parts(11)).unwrap_err();
    assert!(err.to_string().contains("lines sum to 10 cents"), "{err}");
}
