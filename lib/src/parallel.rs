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

/// What a streaming worker hands the consumer: pieces of an item as they are made, then the
/// item's outcome.
#[derive(Debug)]
pub enum Piece<P, D> {
    Part(P),
    Done(D),
}

/// Ordered parallel streaming: `jobs` workers each take an item and `emit` any number of
/// pieces for it; the consumer receives item i's pieces as they are made, once items before
/// i are done, then `Piece::Done` with the worker's outcome. Each item's pieces pass through a
/// queue of `capacity`: a worker ahead of the consumer waits instead of buffering, so memory is
/// bounded by about `jobs × capacity` pieces however long an item is. `emit` returns an error
/// once the consumer has failed; the worker should then stop. The consumer's first error is
/// returned.
pub fn stream_ordered<T, P, D, W, S>(
    items: &[T],
    jobs: usize,
    capacity: usize,
    work: W,
    mut sink: S,
) -> Result<()>
where
    T: Sync,
    P: Send,
    D: Send,
    W: Fn(usize, &T, &mut dyn FnMut(P) -> Result<()>) -> D + Sync,
    S: FnMut(usize, Piece<P, D>) -> Result<()>,
{
    let jobs = jobs.max(1);
    if jobs == 1 {
        for (i, item) in items.iter().enumerate() {
            let mut failed: Option<anyhow::Error> = None;
            let done = work(i, item, &mut |p| {
                if failed.is_some() {
                    anyhow::bail!("the output is closed");
                }
                sink(i, Piece::Part(p)).map_err(|e| {
                    let msg = format!("{e:#}");
                    failed = Some(e);
                    anyhow::anyhow!("the output failed: {msg}")
                })
            });
            if let Some(e) = failed {
                return Err(e);
            }
            sink(i, Piece::Done(done))?;
        }
        return Ok(());
    }
    type Queue<P, D> = crossbeam_channel::Receiver<Piece<P, D>>;
    let next_item = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    // (the item the consumer is on, the queues of items started and not yet taken)
    let state = Mutex::new((0usize, BTreeMap::<usize, Queue<P, D>>::new()));
    let ready = Condvar::new(); // a queue was registered
    let room = Condvar::new(); // the consumer advanced, or gave up
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next_item.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() {
                    return;
                }
                let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
                {
                    let mut st = state.lock().expect("poisoned");
                    while i >= st.0 + jobs && !abort.load(Ordering::SeqCst) {
                        st = room.wait(st).expect("poisoned");
                    }
                    if abort.load(Ordering::SeqCst) {
                        return;
                    }
                    st.1.insert(i, rx);
                }
                ready.notify_all();
                let done = work(i, &items[i], &mut |p| {
                    tx.send(Piece::Part(p)).map_err(|_| anyhow::anyhow!("the output is closed"))
                });
                let _ = tx.send(Piece::Done(done));
            });
        }
        let result = (|| {
            for i in 0..items.len() {
                let rx = {
                    let mut st = state.lock().expect("poisoned");
                    loop {
                        if let Some(rx) = st.1.remove(&i) {
                            st.0 = i;
                            break rx;
                        }
                        st = ready.wait(st).expect("poisoned");
                    }
                };
                room.notify_all();
                loop {
                    match rx.recv() {
                        Ok(Piece::Part(p)) => sink(i, Piece::Part(p))?,
                        Ok(Piece::Done(d)) => {
                            sink(i, Piece::Done(d))?;
                            break;
                        }
                        Err(_) => anyhow::bail!("the worker for input {i} stopped without an outcome"),
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            abort.store(true, Ordering::SeqCst);
            // Dropping the queues makes the workers' sends fail, so they stop.
            state.lock().expect("poisoned").1.clear();
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
    fn streamed_pieces_arrive_in_input_order_and_queues_stay_bounded() {
        let items: Vec<usize> = (0..12).collect();
        for jobs in [1, 3] {
            let in_flight = AtomicUsize::new(0);
            let peak = AtomicUsize::new(0);
            let mut seen = Vec::new();
            stream_ordered(
                &items,
                jobs,
                2,
                |_, &x, emit| {
                    // later items are quicker, so workers run ahead of the consumer
                    for k in 0..20 {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_micros(((12 - x) * 10) as u64));
                        emit((x, k))?;
                    }
                    Ok::<usize, anyhow::Error>(x)
                },
                |i, piece| {
                    match piece {
                        Piece::Part(p) => {
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            seen.push((i, Some(p)));
                        }
                        Piece::Done(d) => seen.push((i, Some((d.unwrap(), 99)))),
                    }
                    Ok(())
                },
            )
            .unwrap();
            let want: Vec<(usize, Option<(usize, usize)>)> = (0..12)
                .flat_map(|x| (0..20).map(move |k| (x, Some((x, k)))).chain([(x, Some((x, 99)))]))
                .collect();
            assert_eq!(seen, want, "jobs {jobs}");
            // each worker holds at most its queue (2) plus the piece it is sending
            assert!(
                peak.load(Ordering::SeqCst) <= jobs * 4,
                "jobs {jobs}: peak {}",
                peak.load(Ordering::SeqCst)
            );
        }
    }

    #[test]
    fn a_failing_stream_consumer_stops_the_workers() {
        let items: Vec<u32> = (0..100).collect();
        for jobs in [1, 2] {
            let made = AtomicUsize::new(0);
            let err = stream_ordered(
                &items,
                jobs,
                2,
                |_, _, emit| {
                    for _ in 0..1000 {
                        made.fetch_add(1, Ordering::SeqCst);
                        emit(())?;
                    }
                    Ok::<(), anyhow::Error>(())
                },
                |i, _| if i == 1 { anyhow::bail!("closed") } else { Ok(()) },
            );
            assert_eq!(err.unwrap_err().to_string(), "closed");
            assert!(
                made.load(Ordering::SeqCst) < 2100,
                "jobs {jobs}: workers ran on: {}",
                made.load(Ordering::SeqCst)
            );
        }
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
