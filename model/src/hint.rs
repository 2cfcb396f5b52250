//! Cache hints for the hot paths that touch large tables at random.

/// Start loading the cache line holding `*r`, without waiting for it: a hint that changes
/// no result. A process that knows which records its next arrivals will touch (a device
/// record, a presence key) hides the memory latency of one behind the work of another:
/// at a million users those tables are far larger than the caches, and a miss costs more
/// than handling an event.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it cannot fault and the program never observes it;
    // `r` is a valid reference in any case.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}
