//! Ordered parallel map: `jobs` workers process items while the caller consumes results in input
//! order. Workers run at most `window` items ahead of the consumer, so memory stays bounded
//! however slow the consumer (a pipe to a slower tool) is.

use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

pub fn map_ordered<T, R, W, S>(items: &[T], jobs: usize, work: W, mut sink: S) -> Result<()>
where
    T: Sync,
    R: Send,
    W: Fn(usize, &T) -> R + Sync,
    S: FnMut(usize, R) -> Result<()>,
{
    let jobs = jobs.max(1);
    if jobs == 1 {
        for (i, item) in items.iter().enumerate() {
            sink(i, work(i, item))?;
        }
        return Ok(());
    }
    let window = 2 * jobs;
    let next_item = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    // (next index the consumer will emit, results waiting for their turn)
    let state = Mutex::new((0usize, BTreeMap::<usize, R>::new()));
    let ready = Condvar::new(); // a result arrived
    let room = Condvar::new(); // the consumer advanced
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next_item.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() {
                    return;
                }
                {
                    let mut st = state.lock().expect("poisoned");
                    while i >= st.0 + window && !abort.load(Ordering::SeqCst) {
                        st = room.wait(st).expect("poisoned");
                    }
                }
                if abort.load(Ordering::SeqCst) {
                    return;
                }
                let r = work(i, &items[i]);
                state.lock().expect("poisoned").1.insert(i, r);
                ready.notify_all();
            });
        }
        let result = (|| {
            for i in 0..items.len() {
                let r = {
                    let mut st = state.lock().expect("poisoned");
                    loop {
                        if let Some(r) = st.1.remove(&i) {
                            st.0 = i + 1;
                            break r;
                        }
                        st = ready.wait(st).expect("poisoned");
                    }
                };
                room.notify_all();
                sink(i, r)?;
            }
            Ok(())
        })();
        if result.is_err() {
            abort.store(true, Ordering::SeqCst);
            room.notify_all();
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_input_order() {
        let items: Vec<u64> = (0..50).collect();
        let mut seen = Vec::new();
        map_ordered(
            &items,
            3,
            |_, &x| {
                std::thread::sleep(std::time::Duration::from_micros((50 - x) * 20));
                x * 2
            },
            |i, r| {
                seen.push((i, r));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..50).map(|i| (i as usize, i * 2)).collect::<Vec<_>>());
    }

    #[test]
    fn a_failing_consumer_stops_the_workers() {
        let items: Vec<u32> = (0..1000).collect();
        let done = AtomicUsize::new(0);
        let err = map_ordered(
            &items,
            2,
            |_, _| done.fetch_add(1, Ordering::SeqCst),
            |i, _| if i == 3 { anyhow::bail!("closed") } else { Ok(()) },
        );
        assert!(err.is_err());
        assert!(done.load(Ordering::SeqCst) < 20, "workers ran on after the consumer stopped");
    }
}
