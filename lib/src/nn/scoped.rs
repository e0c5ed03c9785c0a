//! A thread's settings for the ops it runs (autocast, bf16 handovers, portable ops, sequential
//! work), each a thread-local `Cell` that a `with_*` function sets around a closure.

use std::cell::Cell;
use std::thread::LocalKey;

/// Runs `f` with `setting` at `value` on this thread, the previous value restored on the way
/// out, so also when `f` panics (a caller that catches the panic keeps its own setting).
pub(super) fn with_setting<V: Copy + 'static, T>(
    setting: &'static LocalKey<Cell<V>>,
    value: V,
    f: impl FnOnce() -> T,
) -> T {
    struct Restore<V: Copy + 'static>(&'static LocalKey<Cell<V>>, V);
    impl<V: Copy + 'static> Drop for Restore<V> {
        fn drop(&mut self) {
            self.0.with(|s| s.set(self.1));
        }
    }
    let _restore = Restore(setting, setting.with(|s| s.replace(value)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SETTING: Cell<u8> = const { Cell::new(1) };
    }

    /// The value holds inside, nested settings unwind in order, and a panic inside restores it.
    #[test]
    fn a_setting_holds_inside_and_is_restored_after_a_panic_too() {
        let inner = with_setting(&SETTING, 2, || {
            (
                SETTING.with(|s| s.get()),
                with_setting(&SETTING, 3, || SETTING.with(|s| s.get())),
                SETTING.with(|s| s.get()),
            )
        });
        assert_eq!(inner, (2, 3, 2));
        assert_eq!(SETTING.with(|s| s.get()), 1);
        let caught = std::panic::catch_unwind(|| with_setting(&SETTING, 4, || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(SETTING.with(|s| s.get()), 1);
    }
}
