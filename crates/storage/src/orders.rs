//! Orders: the [`OrderRepository`] trait the gRPC layer and the cache use, and
//! its diesel implementation on [`Database`].

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{
    Cents, Currency, DomainError, IdempotencyKey, NewOrder, Order, OrderId, OrderLine, OrderStatus,
    ProductId, Quantity, RestoredOrder, UserId,
};

use crate::batch::{Answers, Batched};
use crate::db::{Announce as _, Database, InsertRows, insert_rows, with_conn, write_transaction};
use crate::schema::{order_idempotency_keys, order_lines, orders};
use crate::{Conflict, StorageError};

/// Most orders one page may hold; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Page size when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// The outcome of [`OrderRepository::create_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The order: new, or the original one for a repeated idempotency key.
    pub order: Order,
    /// `false` when an earlier call with the same key made it.
    pub created: bool,
}

/// One page of a user's orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    /// The orders on this page.
    pub orders: Vec<Order>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<OrderId>,
}

/// A form derived from an order alone (the wire encoding a server sends,
/// say), which a shared snapshot computes once: see [`FoundOrder::form`].
pub trait OrderForm: Clone + Send + Sync + 'static {
    /// `order` in this form.
    fn of(order: &Order) -> Self;
}

/// What [`OrderRepository::find_order`] hands out: an order, and its
/// derived forms.
pub trait FoundOrder: Borrow<Order> + Into<Order> + Send + 'static {
    /// This order as `F`. A plain [`Order`] computes it on every call; a
    /// cached snapshot ([`crate::CachedOrder`]) computes it once and keeps it
    /// until the snapshot itself is replaced, so it can never describe an
    /// older version of the order.
    fn form<F: OrderForm>(&self) -> F;
}

impl FoundOrder for Order {
    fn form<F: OrderForm>(&self) -> F {
        F::of(self)
    }
}

/// Orders as the rest of the system sees them.
pub trait OrderRepository: Send + Sync + 'static {
    /// How [`Self::find_order`] hands out an order: the plain [`Order`] from
    /// a database; a shared snapshot from a cache, so a hit copies nothing.
    type Found: FoundOrder;

    /// The order with `id`.
    fn find_order(
        &self,
        id: OrderId,
    ) -> impl Future<Output = Result<Self::Found, StorageError>> + Send;

    /// Stores a new PENDING order. With an idempotency key already used by
    /// this user, returns the order that key made and creates nothing.
    fn create_order(
        &self,
        new: NewOrder,
    ) -> impl Future<Output = Result<Created, StorageError>> + Send;

    /// Moves an order to `status` if it is still at `expected_version`
    /// (`Conflict::StaleVersion` otherwise) and the move is legal
    /// (`DomainError::IllegalTransition` otherwise).
    fn update_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        expected_version: u64,
    ) -> impl Future<Output = Result<Order, StorageError>> + Send;

    /// A user's orders, newest first, `page_size` at most (0 means the
    /// default), starting after `after` (keyset pagination: stable while
    /// new orders arrive).
    fn list_orders(
        &self,
        user_id: &UserId,
        page_size: u32,
        after: Option<OrderId>,
    ) -> impl Future<Output = Result<OrderPage, StorageError>> + Send;
}

/// A shared repository is a repository (the server hands one `Arc` to the
/// cache and the health check).
impl<R: OrderRepository> OrderRepository for Arc<R> {
    type Found = R::Found;

    fn find_order(
        &self,
        id: OrderId,
    ) -> impl Future<Output = Result<R::Found, StorageError>> + Send {
        (**self).find_order(id)
    }

    fn create_order(
        &self,
        new: NewOrder,
    ) -> impl Future<Output = Result<Created, StorageError>> + Send {
        (**self).create_order(new)
    }

    fn update_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        expected_version: u64,
    ) -> impl Future<Output = Result<Order, StorageError>> + Send {
        (**self).update_status(id, status, expected_version)
    }

    fn list_orders(
        &self,
        user_id: &UserId,
        page_size: u32,
        after: Option<OrderId>,
    ) -> impl Future<Output = Result<OrderPage, StorageError>> + Send {
        (**self).list_orders(user_id, page_size, after)
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders)]
struct OrderRow {
    order_id: String,
    user_id: String,
    status: String,
    total_cents: i64,
    currency: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_lines)]
struct LineRow {
    order_id: String,
    line_no: i32,
    product_id: String,
    quantity: i64,
    unit_price_cents: i64,
}

insert_rows!(LineRow => order_lines::table);

#[derive(Debug, Insertable)]
#[diesel(table_name = order_idempotency_keys)]
struct KeyRow<'a> {
    user_id: &'a str,
    idempotency_key: &'a str,
    order_id: &'a str,
    created_at: NaiveDateTime,
}

/// Now, truncated to what both backends store (microseconds), so an order
/// reads back equal to what was written.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn corrupt(id: &str, what: impl std::fmt::Display) -> StorageError {
    StorageError::Internal(format!("stored order {id} is unreadable: {what}"))
}

fn order_rows(order: &Order) -> Result<(OrderRow, Vec<LineRow>), StorageError> {
    let id = order.id().to_string();
    let version = i64::try_from(order.version()).map_err(|e| corrupt(&id, e))?;
    let lines = order
        .lines()
        .iter()
        .enumerate()
        .map(|(n, line)| {
            Ok(LineRow {
                order_id: id.clone(),
                line_no: i32::try_from(n).map_err(|e| corrupt(&id, e))?,
                product_id: line.product_id().to_string(),
                quantity: i64::from(line.quantity().get()),
                unit_price_cents: line.unit_price().get(),
            })
        })
        .collect::<Result<_, StorageError>>()?;
    let row = OrderRow {
        order_id: id,
        user_id: order.user_id().to_string(),
        status: order.status().as_str().to_owned(),
        total_cents: order.total().get(),
        currency: order.currency().to_string(),
        created_at: order.created_at().naive_utc(),
        updated_at: order.updated_at().naive_utc(),
        version,
    };
    Ok((row, lines))
}

fn restore(row: OrderRow, lines: Vec<LineRow>) -> Result<Order, StorageError> {
    let id = row.order_id.clone();
    let bad = |e: domain::DomainError| corrupt(&id, e);
    let lines = lines
        .into_iter()
        .map(|line| {
            let field = format!("lines[{}]", line.line_no);
            let quantity = u32::try_from(line.quantity).map_err(|e| corrupt(&id, e))?;
            OrderLine::new(
                &field,
                ProductId::parse(line.product_id).map_err(bad)?,
                Quantity::parse_field(&field, quantity).map_err(bad)?,
                Cents::new(line.unit_price_cents),
            )
            .map_err(bad)
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Order::restore(RestoredOrder {
        id: OrderId::parse(&row.order_id).map_err(bad)?,
        user_id: UserId::parse(row.user_id).map_err(bad)?,
        status: row.status.parse().map_err(bad)?,
        lines,
        total: Cents::new(row.total_cents),
        currency: Currency::parse(&row.currency).map_err(bad)?,
        created_at: row.created_at.and_utc(),
        updated_at: row.updated_at.and_utc(),
        version: u64::try_from(row.version).map_err(|e| corrupt(&id, e))?,
    })
    .map_err(bad)
}

/// Loads the orders `rows` describe with their lines, in `rows`' order.
macro_rules! load_with_lines {
    ($c:ident, $rows:expr) => {{
        let rows: Vec<OrderRow> = $rows;
        let ids: Vec<&str> = rows.iter().map(|r| r.order_id.as_str()).collect();
        let lines: Vec<LineRow> = order_lines::table
            .filter(order_lines::order_id.eq_any(&ids))
            .order((order_lines::order_id, order_lines::line_no))
            .select(LineRow::as_select())
            .load($c)
            .await?;
        let mut by_order: HashMap<String, Vec<LineRow>> = HashMap::with_capacity(rows.len());
        for line in lines {
            by_order
                .entry(line.order_id.clone())
                .or_default()
                .push(line);
        }
        rows.into_iter()
            .map(|row| {
                let lines = by_order.remove(&row.order_id).unwrap_or_default();
                restore(row, lines)
            })
            .collect::<Result<Vec<Order>, StorageError>>()
    }};
}

/// Finds the order a user's idempotency key made, inside a transaction.
macro_rules! find_by_key {
    ($c:ident, $user:expr, $key:expr) => {{
        let found: Option<OrderRow> = order_idempotency_keys::table
            .inner_join(orders::table)
            .filter(order_idempotency_keys::user_id.eq($user))
            .filter(order_idempotency_keys::idempotency_key.eq($key))
            .select(OrderRow::as_select())
            .first($c)
            .await
            .optional()?;
        match found {
            Some(row) => load_with_lines!($c, vec![row])?.into_iter().next(),
            None => None,
        }
    }};
}

/// Order lookups by id, batched (see [`Database::order_reads`]): each
/// answer is the order, or why its stored rows are unreadable.
pub(crate) type OrderReads = Batched<OrderId, Result<Order, StorageError>>;

/// Most ids one batched lookup asks for: 128 requests in flight fill about
/// two batches, as many as there are shared readers.
const READ_BATCH_IDS: usize = 128;

impl OrderReads {
    /// As many batches in flight as there are shared readers; each takes
    /// the next reader in turn (`Database::reader`).
    pub(crate) fn for_readers(readers: usize) -> Self {
        Self::new(readers, READ_BATCH_IDS)
    }
}

impl Database {
    /// The orders with `ids` (distinct) in one statement on a shared reader
    /// (PostgreSQL): each order row joined to its lines, which every order
    /// has. Ids with no order are left out.
    async fn orders_by_id(
        &self,
        ids: Vec<OrderId>,
    ) -> Answers<OrderId, Result<Order, StorageError>> {
        let Some(shared) = self.reader().await? else {
            return Err(StorageError::Internal(
                "a batched order lookup found no shared reader".to_owned(),
            ));
        };
        let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let mut c: &AsyncPgConnection = &shared;
        let rows: Result<Vec<(OrderRow, LineRow)>, StorageError> = self
            .timed(async {
                orders::table
                    .inner_join(order_lines::table)
                    .filter(orders::order_id.eq_any(&keys))
                    // Said of both tables, so PostgreSQL walks both primary
                    // keys (a merge join, already in order) instead of
                    // scanning every line.
                    .filter(order_lines::order_id.eq_any(&keys))
                    .order((orders::order_id, order_lines::line_no))
                    .select((OrderRow::as_select(), LineRow::as_select()))
                    .load(&mut c)
                    .await
                    .map_err(StorageError::from)
            })
            .await;
        if rows.is_err() {
            self.drop_reader(&shared);
        }
        let by_key: HashMap<&str, OrderId> = keys.iter().map(String::as_str).zip(ids).collect();
        let mut found = HashMap::with_capacity(by_key.len());
        let mut rows = rows?.into_iter().peekable();
        while let Some((order, first)) = rows.next() {
            let mut lines = vec![first];
            while let Some((_, line)) = rows.next_if(|(next, _)| next.order_id == order.order_id) {
                lines.push(line);
            }
            // The statement only matches the ids asked for.
            if let Some(id) = by_key.get(order.order_id.as_str()) {
                found.insert(*id, restore(order, lines));
            }
        }
        Ok(found)
    }

    async fn order_by_key(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, StorageError> {
        let mut conn = self.acquire().await?;
        let order = with_conn!(&mut conn, |c| find_by_key!(c, user.as_str(), key.as_str()));
        Ok(order)
    }
}

impl OrderRepository for Database {
    type Found = Order;

    #[tracing::instrument(
        name = "SELECT orders",
        skip_all,
        fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "SELECT", db.collection.name = "orders")
    )]
    async fn find_order(&self, id: OrderId) -> Result<Order, StorageError> {
        if crate::failpoint::eval("storage-find-order").await.is_some() {
            return Err(StorageError::Unavailable(
                "failpoint storage-find-order".to_owned(),
            ));
        }
        // PostgreSQL: with other lookups in flight, in their next batch.
        if let Some(reads) = self.order_reads() {
            let db = self.clone();
            let found = self
                .timed(reads.get(id, move |ids| {
                    let db = db.clone();
                    async move { db.orders_by_id(ids).await }
                }))
                .await?;
            return match found {
                Some(order) => order,
                None => Err(StorageError::NotFound {
                    entity: "order",
                    id: id.to_string(),
                }),
            };
        }
        self.timed(async {
            let key = id.to_string();
            // One round trip: the order row joined to its lines (every
            // order has at least one).
            let mut conn = self.acquire().await?;
            let rows: Vec<(OrderRow, LineRow)> = with_conn!(&mut conn, |c| {
                orders::table
                    .inner_join(order_lines::table)
                    .filter(orders::order_id.eq(&key))
                    .order(order_lines::line_no)
                    .select((OrderRow::as_select(), LineRow::as_select()))
                    .load(c)
                    .await
            })?;
            let mut rows = rows.into_iter();
            let Some((order, first)) = rows.next() else {
                return Err(StorageError::NotFound {
                    entity: "order",
                    id: key,
                });
            };
            let lines = std::iter::once(first)
                .chain(rows.map(|(_, line)| line))
                .collect();
            restore(order, lines)
        })
        .await
    }

    #[tracing::instrument(
        name = "INSERT orders",
        skip_all,
        fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "INSERT", db.collection.name = "orders")
    )]
    async fn create_order(&self, new: NewOrder) -> Result<Created, StorageError> {
        let key = new.idempotency_key().cloned();
        let retry = key.clone().map(|key| (new.user_id().clone(), key));
        // What a retry with the same key must repeat to get the original
        // order back (the user is part of the key).
        let asked = (new.lines().to_vec(), new.currency(), key.clone());
        let order = Order::place(OrderId::generate(), new, now());
        let (row, lines) = order_rows(&order)?;
        let result = self
            .write(move |mut conn| async move {
                write_transaction!(&mut conn, |c| {
                    if let Some(key) = &key
                        && let Some(original) = find_by_key!(c, row.user_id.as_str(), key.as_str())
                    {
                        return Ok(Created {
                            order: original,
                            created: false,
                        });
                    }
                    diesel::insert_into(orders::table)
                        .values(&row)
                        .execute(c)
                        .await?;
                    c.insert_rows(lines).await?;
                    if let Some(key) = &key {
                        let key_row = KeyRow {
                            user_id: &row.user_id,
                            idempotency_key: key.as_str(),
                            order_id: &row.order_id,
                            created_at: row.created_at,
                        };
                        diesel::insert_into(order_idempotency_keys::table)
                            .values(&key_row)
                            .execute(c)
                            .await?;
                    }
                    Ok::<_, StorageError>(Created {
                        order,
                        created: true,
                    })
                })
            })
            .await;
        let outcome = match (result, retry) {
            // Two concurrent first attempts with one key (PostgreSQL): the
            // loser hits the key's primary key and rolls back; the winner's
            // order is the answer.
            (Err(StorageError::Conflict(Conflict::Duplicate(what))), Some((user, key))) => {
                match self.timed(self.order_by_key(&user, &key)).await? {
                    Some(original) => Ok(Created {
                        order: original,
                        created: false,
                    }),
                    None => Err(Conflict::Duplicate(what).into()),
                }
            }
            (result, _) => result,
        }?;
        // A key sent again with a different request is a client bug that
        // returning the first order would hide.
        match (&outcome, asked.2) {
            (
                Created {
                    order,
                    created: false,
                },
                Some(key),
            ) if order.lines() != asked.0.as_slice() || order.currency() != asked.1 => {
                Err(DomainError::IdempotencyKeyReused(key).into())
            }
            _ => Ok(outcome),
        }
    }

    #[tracing::instrument(
        name = "UPDATE orders",
        skip_all,
        fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "UPDATE", db.collection.name = "orders")
    )]
    async fn update_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        expected_version: u64,
    ) -> Result<Order, StorageError> {
        let key = id.to_string();
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                let rows: Vec<OrderRow> = orders::table
                    .find(&key)
                    .select(OrderRow::as_select())
                    .load(c)
                    .await?;
                let Some(current) = load_with_lines!(c, rows)?.into_iter().next() else {
                    return Err(StorageError::NotFound {
                        entity: "order",
                        id: key,
                    });
                };
                if current.version() != expected_version {
                    return Err(Conflict::StaleVersion {
                        id: key,
                        expected: expected_version,
                        actual: current.version(),
                    }
                    .into());
                }
                let updated = current.with_status(status, now())?;
                let (row, _) = order_rows(&updated)?;
                let changed = diesel::update(orders::table.find(&key))
                    .filter(orders::version.eq(row.version - 1))
                    .set((
                        orders::status.eq(&row.status),
                        orders::updated_at.eq(row.updated_at),
                        orders::version.eq(row.version),
                    ))
                    .execute(c)
                    .await?;
                if changed != 1 {
                    // A concurrent writer committed between our read and write
                    // (PostgreSQL read committed); its version is newer.
                    return Err(Conflict::StaleVersion {
                        id: key,
                        expected: expected_version,
                        actual: expected_version + 1,
                    }
                    .into());
                }
                c.announce(&key, row.version).await?;
                Ok(updated)
            })
        })
        .await
    }

    #[tracing::instrument(
        name = "SELECT orders",
        skip_all,
        fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "SELECT", db.collection.name = "orders")
    )]
    async fn list_orders(
        &self,
        user_id: &UserId,
        page_size: u32,
        after: Option<OrderId>,
    ) -> Result<OrderPage, StorageError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        self.timed(async {
            let mut conn = self.acquire().await?;
            let after = after.map(|id| id.to_string());
            let mut orders = with_conn!(&mut conn, |c| {
                let mut query = orders::table
                    .filter(orders::user_id.eq(user_id.as_str()))
                    .order(orders::order_id.desc())
                    .limit(i64::from(size) + 1)
                    .select(OrderRow::as_select())
                    .into_boxed();
                if let Some(after) = &after {
                    query = query.filter(orders::order_id.lt(after));
                }
                let rows: Vec<OrderRow> = query.load(c).await?;
                load_with_lines!(c, rows)
            })?;
            // One row past the page tells whether another page exists.
            let more = orders.len() > size as usize;
            orders.truncate(size as usize);
            let next = if more {
                orders.last().map(Order::id)
            } else {
                None
            };
            Ok(OrderPage { orders, next })
        })
        .await
    }
}
