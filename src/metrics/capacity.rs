//! What the runtime can hold and how loaded it is: the memory pool, each worker pool's size and
//! predicted queueing delay, and connections refused at the edge.

use std::fmt;
use std::sync::Arc;

use pagegen_core::PoolId;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::engine::Engine;
use crate::metrics::registry::{counter, family, gauge, seconds};
use crate::runtime::{Handle, PoolSize};

/// Labels of the per-pool gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Pool {
    pool: Arc<str>,
}

/// Reads the admission controller, the executor's pool sizes and the edge's refusal count.
#[derive(Debug)]
pub(crate) struct CapacityCollector {
    engine: Arc<Engine>,
    handle: Handle,
    /// Pool names by `PoolId` (fixed when the runtime was built).
    pools: Vec<Arc<str>>,
}

impl CapacityCollector {
    pub(crate) fn new(engine: Arc<Engine>, handle: Handle, pools: Vec<Arc<str>>) -> Self {
        CapacityCollector {
            engine,
            handle,
            pools,
        }
    }

    fn sizes(&self) -> Vec<(Pool, PoolSize, u64)> {
        let admission = self.engine.admission();
        self.pools
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let id = PoolId(i as u8);
                let size = self.handle.pool_size(id)?;
                Some((
                    Pool { pool: name.clone() },
                    size,
                    admission.predicted_delay_ns(id),
                ))
            })
            .collect()
    }
}

impl Collector for CapacityCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let memory = self.engine.admission().memory();
        gauge(
            &mut enc,
            "memory_pool_capacity",
            "Bytes all live requests' memory budgets may hold together.",
            Some(Unit::Bytes),
            memory.capacity(),
        )?;
        gauge(
            &mut enc,
            "memory_pool_reserved",
            "Bytes reserved now by admitted requests' memory budgets.",
            Some(Unit::Bytes),
            memory.reserved(),
        )?;
        gauge(
            &mut enc,
            "memory_pool_small_reserve",
            "Bytes of the pool only small budgets may take (mem_reserve), so large requests \
             cannot keep light ones waiting for memory.",
            Some(Unit::Bytes),
            memory.small_reserve(),
        )?;
        let pools = self.sizes();
        family(
            &mut enc,
            "pool_predicted_queue_delay",
            "Predicted delay before a new request runs in the pool: the admitted requests' \
             predicted CPU over the pool's workers.",
            Some(Unit::Seconds),
            pools
                .iter()
                .map(|(p, _, delay)| (p.clone(), ConstGauge::new(seconds(*delay)))),
        )?;
        family(
            &mut enc,
            "pool_configured_workers",
            "Worker threads the pool was built with.",
            None,
            pools
                .iter()
                .map(|(p, s, _)| (p.clone(), ConstGauge::new(s.configured as u64))),
        )?;
        family(
            &mut enc,
            "pool_active_workers",
            "Workers of the pool asked to run tasks (the rest are parked by a resize).",
            None,
            pools
                .iter()
                .map(|(p, s, _)| (p.clone(), ConstGauge::new(s.active as u64))),
        )?;
        family(
            &mut enc,
            "pool_parked_workers",
            "Workers of the pool parked by a resize right now.",
            None,
            pools
                .iter()
                .map(|(p, s, _)| (p.clone(), ConstGauge::new(s.parked as u64))),
        )?;
        counter(
            &mut enc,
            "refused_connections",
            "Connections refused past max_connections.",
            self.engine.refused_connections(),
        )
    }
}
