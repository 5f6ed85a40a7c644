//! `orderflow.v1.OrderService`: orders, over any [`OrderRepository`] (the
//! server passes the cached one, so GetOrder is served from the cache).

use storage::{FoundOrder as _, OrderRepository};
use tonic::{Request, Response, Status};

use crate::audit::Trail;
use crate::proto::order_service_server::OrderService;
use crate::proto::{
    CreateOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse,
    UpdateOrderStatusRequest,
};
use crate::{EncodedOrder, convert, status};

/// The order service over a repository.
pub struct OrderApi<R> {
    orders: R,
}

impl<R: OrderRepository> OrderApi<R> {
    /// Serves `orders`.
    pub fn new(orders: R) -> Self {
        Self { orders }
    }
}

#[tonic::async_trait]
impl<R: OrderRepository> OrderService for OrderApi<R> {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<EncodedOrder>, Status> {
        let trail = Trail::of(&request);
        let new = convert::new_order_from_wire(request.into_inner())?;
        let created = self
            .orders
            .create_order(new)
            .await
            .map_err(status::storage)?;
        trail.order(created.order.id());
        Ok(Response::new(EncodedOrder::new(&created.order)))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<EncodedOrder>, Status> {
        fail::fail_point!("grpc-get-order");
        #[cfg(feature = "failpoints")]
        if let Some(hold) = fail::eval("grpc-get-order-lock", |ms| {
            ms.and_then(|ms| ms.parse().ok())
        })
        .flatten()
        {
            hold_a_lock_across_await(std::time::Duration::from_millis(hold)).await;
        }
        let id = convert::order_id_from_wire(&request.get_ref().order_id)?;
        let order = self.orders.find_order(id).await.map_err(status::storage)?;
        // A cached order keeps its encoding (`EncodedOrder`).
        Ok(Response::new(order.form::<EncodedOrder>()))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let user = convert::user_id_from_wire(request.user_id)?;
        let after = convert::page_token_from_wire(&request.page_token, &user, request.page_size)?;
        let page = self
            .orders
            .list_orders(&user, request.page_size, after)
            .await
            .map_err(status::storage)?;
        Ok(Response::new(ListOrdersResponse {
            orders: page.orders.iter().map(convert::order_to_wire).collect(),
            next_page_token: page
                .next
                .map(|id| convert::page_token_to_wire(id, &user, request.page_size))
                .unwrap_or_default(),
        }))
    }

    async fn update_order_status(
        &self,
        request: Request<UpdateOrderStatusRequest>,
    ) -> Result<Response<EncodedOrder>, Status> {
        let trail = Trail::of(&request);
        let request = request.into_inner();
        let id = convert::order_id_from_wire(&request.order_id)?;
        trail.order(id);
        let next = convert::order_status_from_wire(request.status)?;
        let order = self
            .orders
            .update_status(id, next, request.expected_version)
            .await
            .map_err(status::storage)?;
        Ok(Response::new(EncodedOrder::new(&order)))
    }
}

/// The deadlock class this workspace's lints deny, reproduced on purpose
/// for the stall watchdog's tests (failpoint `grpc-get-order-lock=return(MS)`).
/// The first call holds a `std::sync::Mutex` across an `.await` of `hold`:
/// in a `block_on` on a blocking thread, because tonic's handler futures
/// must be `Send` and a std guard is not (the bug needs a `!Send` context to
/// compile). Each later call, while it is held, waits in `lock()` on its
/// runtime worker thread: what a stuck worker looks like, with CPU at 0% and
/// the other workers still answering health checks.
#[cfg(feature = "failpoints")]
async fn hold_a_lock_across_await(hold: std::time::Duration) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, PoisonError};
    static HELD: Mutex<()> = Mutex::new(());
    static HOLDING: AtomicBool = AtomicBool::new(false);
    if HOLDING.swap(true, Ordering::AcqRel) {
        // The victim: blocks this worker thread until the holder is done.
        drop(HELD.lock().unwrap_or_else(PoisonError::into_inner));
        return;
    }
    let runtime = tokio::runtime::Handle::current();
    let holder = tokio::task::spawn_blocking(move || {
        let guard = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        runtime.block_on(tokio::time::sleep(hold));
        drop(guard);
    });
    let _ = holder.await;
    HOLDING.store(false, Ordering::Release);
}
