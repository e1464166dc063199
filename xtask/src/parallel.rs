//! Running independent test jobs (QEMU boots, host-native programs) a few at a time while their
//! results come out in the jobs' own order, so a parallel run prints exactly what `--jobs 1`
//! prints, only sooner.
//!
//! Workers take the next job in list order (the earliest jobs start first); a finished job's
//! result is held until it and every earlier job are reported, then reported at once. Nothing is
//! shared between jobs here: each job must use its own log, image copies and temporary files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The most jobs `--jobs`'s default runs at once: every TCG QEMU keeps a host CPU busy, and
/// each takes up to 1 GiB of guest memory.
pub const MAX_DEFAULT_JOBS: usize = 4;

/// The default of `--jobs`: one job per available host CPU, counting `smp` CPUs per QEMU
/// (multi-threaded TCG runs each guest CPU on a host thread), at least 1, at most
/// [`MAX_DEFAULT_JOBS`].
pub fn default_jobs(smp: u32) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    jobs_for(cpus, smp)
}

fn jobs_for(cpus: usize, smp: u32) -> usize {
    (cpus / smp.max(1) as usize).clamp(1, MAX_DEFAULT_JOBS)
}

/// A job's time limit scaled for `jobs` running at once: QEMU under TCG gets less of the host
/// per boot when several run on few CPUs, so the limits tuned for one-at-a-time runs get twice
/// the room (the silence limits inside a boot are unchanged). `jobs == 1` keeps `limit`.
pub fn headroom(limit: Duration, jobs: usize) -> Duration {
    if jobs > 1 {
        limit * 2
    } else {
        limit
    }
}

/// Runs `work` on each of `items`, at most `jobs` at a time, and calls `report` with each result
/// in the order of `items`, each as soon as it and all earlier ones are done. With `jobs <= 1`
/// it runs them one after the other on this thread: work, report, work, report.
pub fn ordered<T, R>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
    mut report: impl FnMut(R),
) where
    T: Sync,
    R: Send,
{
    if jobs <= 1 || items.len() <= 1 {
        for item in items {
            report(work(item));
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, R)>();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(items.len()) {
            let tx = tx.clone();
            let (next, work) = (&next, &work);
            scope.spawn(move || loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                if tx.send((index, work(item))).is_err() {
                    break;
                }
            });
        }
        // Only the workers hold senders now: the loop below ends when the last one is done
        // (or has panicked, which the scope then re-raises).
        drop(tx);
        let mut held = BTreeMap::new();
        let mut due = 0;
        for (index, result) in rx {
            held.insert(index, result);
            while let Some(result) = held.remove(&due) {
                report(result);
                due += 1;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Barrier, Mutex};
    use std::time::Instant;

    #[test]
    fn results_come_in_item_order_whatever_order_jobs_finish() {
        // Later items finish first (item i sleeps (8 - i) * 5 ms).
        let items: Vec<u64> = (0..8).collect();
        for jobs in [1, 2, 3, 8, 20] {
            let mut seen = Vec::new();
            ordered(
                &items,
                jobs,
                |&i| {
                    std::thread::sleep(Duration::from_millis((8 - i) * 5));
                    i * 10
                },
                |r| seen.push(r),
            );
            assert_eq!(seen, [0, 10, 20, 30, 40, 50, 60, 70], "jobs={jobs}");
        }
    }

    #[test]
    fn one_job_runs_and_reports_each_item_before_starting_the_next() {
        let log = Mutex::new(Vec::new());
        let mut reports = Vec::new();
        ordered(
            &[1, 2, 3],
            1,
            |&i| {
                log.lock().unwrap().push(format!("work {i}"));
                i
            },
            |i| {
                log.lock().unwrap().push(format!("report {i}"));
                reports.push(i);
            },
        );
        assert_eq!(
            *log.lock().unwrap(),
            ["work 1", "report 1", "work 2", "report 2", "work 3", "report 3"]
        );
        assert_eq!(reports, [1, 2, 3]);
    }

    #[test]
    fn jobs_overlap_up_to_the_limit_and_no_further() {
        // Both jobs of a pair must be running at once to pass the barrier: with jobs=2 this
        // finishes; the counter shows never more than 2 ran at a time.
        let barrier = Barrier::new(2);
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<usize> = (0..6).collect();
        let mut seen = Vec::new();
        ordered(
            &items,
            2,
            |&i| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                barrier.wait();
                running.fetch_sub(1, Ordering::SeqCst);
                i
            },
            |i| seen.push(i),
        );
        assert_eq!(seen, items);
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_early_result_is_reported_while_later_jobs_still_run() {
        // Item 1 waits until item 0 has been reported: a runner that held every result to the
        // end would never release it (the test would hang), one that reported out of order
        // would report 1 before 0.
        let (reported_tx, reported_rx) = mpsc::channel::<()>();
        let reported_rx = Mutex::new(reported_rx);
        let mut seen = Vec::new();
        let start = Instant::now();
        ordered(
            &[0, 1, 2],
            2,
            |&i| {
                if i == 1 {
                    reported_rx
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10))
                        .expect("item 0 was not reported while item 1 ran");
                }
                i
            },
            |i| {
                seen.push(i);
                if i == 0 {
                    reported_tx.send(()).unwrap();
                }
            },
        );
        assert_eq!(seen, [0, 1, 2]);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_slow_first_job_holds_back_the_later_results() {
        // Item 0 finishes only after items 1..4 have: they must still be reported after it.
        let finished = Mutex::new(Vec::new());
        let items: Vec<usize> = (0..5).collect();
        let mut reports = Vec::new();
        ordered(
            &items,
            3,
            |&i| {
                if i == 0 {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while finished.lock().unwrap().len() < 4 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                finished.lock().unwrap().push(i);
                i
            },
            |i| reports.push(i),
        );
        let finished = finished.into_inner().unwrap();
        assert_eq!(
            finished.last(),
            Some(&0),
            "item 0 finished last: {finished:?}"
        );
        assert_eq!(reports, items);
    }

    #[test]
    fn default_jobs_follow_the_cpus_and_the_guest_size() {
        assert_eq!(jobs_for(2, 1), 2, "CI: 2 CPUs, 1-CPU guests");
        assert_eq!(jobs_for(1, 1), 1);
        assert_eq!(jobs_for(64, 1), MAX_DEFAULT_JOBS);
        assert_eq!(jobs_for(2, 2), 1, "two 2-CPU guests would share 2 CPUs");
        assert_eq!(jobs_for(8, 4), 2);
        assert_eq!(jobs_for(2, 4), 1);
        assert!(default_jobs(1) >= 1);
        assert_eq!(
            headroom(Duration::from_secs(120), 1),
            Duration::from_secs(120)
        );
        assert_eq!(
            headroom(Duration::from_secs(120), 2),
            Duration::from_secs(240)
        );
    }
}
