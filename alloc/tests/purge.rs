//! After a class's burst, its dirty pages are purged and RSS comes back down. In its own binary so
//! no other test's allocations move the process's RSS meanwhile.

mod support;

use pagegen_alloc::{AllocHook, ArenaStats, ClassArenas, PagegenAlloc};
use pagegen_core::{ClassId, Verdict};
use support::{ctx, yield_now, Step, Task};

#[global_allocator]
static A: PagegenAlloc = PagegenAlloc::new();

const MIB: usize = 1 << 20;
const BURST: usize = 64;

/// Resident set size from `/proc/self/statm` (pages × page size), if the platform has it.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[test]
fn burst_dirty_pages_are_purged_and_rss_returns() {
    let class = ClassId::from_raw(30);
    ClassArenas::new().ensure(class).expect("class arena");
    let s = ArenaStats::new().expect("stats");
    s.refresh().expect("epoch");
    let start = s.class(class).expect("read").expect("arena");
    let rss0 = rss();

    let hook = AllocHook::new();
    let c = ctx(1, 30, u64::MAX, u64::MAX);
    let mut t = Task::new(c.clone(), async {
        let mut burst: Vec<Vec<u8>> = Vec::with_capacity(BURST);
        for i in 0..BURST {
            let mut v = Vec::with_capacity(MIB);
            v.resize(MIB, i as u8); // touch every page
            burst.push(v);
        }
        yield_now().await;
        drop(burst);
    });
    assert_eq!(t.poll(&hook), Step::Pending(Verdict::Continue));
    s.refresh().expect("epoch");
    let peak = s.class(class).expect("read").expect("arena");
    let rss_peak = rss();
    assert!(
        peak.active >= start.active + (BURST * MIB) as u64,
        "{peak:?}"
    );
    assert!(peak.resident >= (BURST * MIB) as u64, "{peak:?}");

    assert_eq!(t.poll(&hook), Step::Ready(Verdict::Continue));
    s.refresh().expect("epoch");
    let freed = s.class(class).expect("read").expect("arena");
    assert!(
        freed.active + ((BURST - 1) * MIB) as u64 <= peak.active,
        "pactive comes down at once: {freed:?}"
    );
    assert!(
        freed.dirty + freed.muzzy > 0,
        "freed pages wait as dirty until decay: {freed:?}"
    );

    assert!(s.purge(class).expect("purge"));
    s.refresh().expect("epoch");
    let purged = s.class(class).expect("read").expect("arena");
    assert_eq!(purged.dirty, 0, "{purged:?}");
    assert_eq!(purged.muzzy, 0, "{purged:?}");
    assert!(
        purged.resident + ((BURST / 2) * MIB) as u64 <= peak.resident,
        "the arena's resident bytes come down: {peak:?} → {purged:?}"
    );
    if let (Some(r0), Some(rp), Some(r1)) = (rss0, rss_peak, rss()) {
        assert!(
            rp >= r0 + ((BURST / 2) * MIB) as u64,
            "burst shows in RSS: {r0} → {rp}"
        );
        assert!(
            r1 + ((BURST / 2) * MIB) as u64 <= rp,
            "RSS comes back down after the purge: {rp} → {r1}"
        );
    }
    assert!(
        !s.purge(ClassId::DEFAULT).expect("no arena"),
        "the default class has no arena"
    );
}
