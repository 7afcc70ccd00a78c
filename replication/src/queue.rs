//! A channel bounded in bytes (vector's `limited_queue`): the sender acquires one semaphore
//! permit per byte of the item before it is queued, the receiver releases them when it drops
//! the item's [`Permit`] after processing. An item larger than the whole budget takes the whole
//! budget, so it still passes, alone.
//!
//! It lives in this crate rather than the pipeline core because the source must wait for
//! capacity inside its own loop, where it keeps answering the server while blocked.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Memory released when the receiver is done with an item.
pub type Permit = OwnedSemaphorePermit;

/// Sending half.
pub struct Sender<T> {
    tx: mpsc::UnboundedSender<(T, Permit)>,
    budget: Arc<Semaphore>,
    capacity: u32,
}

/// Receiving half.
pub struct Receiver<T> {
    rx: mpsc::UnboundedReceiver<(T, Permit)>,
    budget: Arc<Semaphore>,
    capacity: u32,
}

/// The receiver is gone.
#[derive(Debug)]
pub struct Closed;

/// A queue holding at most `capacity_bytes` bytes of items at a time.
pub fn channel<T>(capacity_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let capacity =
        u32::try_from(capacity_bytes.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(capacity as usize));
    (
        Sender {
            tx,
            budget: budget.clone(),
            capacity,
        },
        Receiver {
            rx,
            budget,
            capacity,
        },
    )
}

impl<T> Sender<T> {
    /// Wait for `bytes` of budget. Cancel-safe: dropping the future gives nothing up.
    pub async fn reserve(&self, bytes: usize) -> Result<Permit, Closed> {
        let n = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity);
        self.budget
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| Closed)
    }

    /// Queue an item with the budget reserved for it.
    pub fn send(&self, item: T, permit: Permit) -> Result<(), Closed> {
        self.tx.send((item, permit)).map_err(|_| Closed)
    }
}

impl<T> Receiver<T> {
    /// The next item and its permit; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<(T, Permit)> {
        self.rx.recv().await
    }

    /// Bytes of the budget held by queued and in-process items.
    pub fn in_use(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.budget.available_permits())
    }

    /// The whole budget in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_when_full_and_releases_on_drop() {
        let (tx, mut rx) = channel::<u32>(100);
        let p = tx.reserve(80).await.unwrap();
        tx.send(1, p).unwrap();
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(50), tx.reserve(30));
        assert!(blocked.await.is_err(), "budget must be exhausted");
        let (item, permit) = rx.recv().await.unwrap();
        assert_eq!(item, 1);
        drop(permit);
        let p = tx.reserve(1_000).await.unwrap();
        assert_eq!(
            p.num_permits(),
            100,
            "oversized items take the whole budget"
        );
    }
}
