//! The allocation policy: Demand → Grant, admission, enforcement and class shares — pure decisions
//! over `pagegen-core` types, with no HTTP in sight (so every rule is tested without a server).
//!
//! | module | decides |
//! |---|---|
//! | [`grant`] | what a request may use: pool, CPU, memory, I/O, wall time ([`GrantPolicy`]) |
//! | [`admission`] | whether it may start now: memory reserved from the pool, predicted queueing delay within its deadline; else wait (bounded), then shed ([`Admission`], [`Refusal`]) |
//! | [`checkpoint`] | what happens as it nears its grant: at 50 % / 90 % re-predicted from its usage so far, then extended, demoted, or refused ([`Checkpoints`]) |
//! | [`enforce`] | what happens while it runs: over its CPU grant → demoted to the bulk pool; past its wall time → cancelled ([`EnforceHook`]) |
//! | [`shares`] | how classes split the CPU each period: by the admitted requests each has outstanding ([`OutstandingShares`]) |
//! | [`counters`] | every decision, counted per class and in total ([`Decisions`]) |

pub mod admission;
pub mod checkpoint;
pub mod counters;
pub mod enforce;
pub mod grant;
pub mod shares;

pub use admission::{Admission, Refusal, Ticket};
pub use checkpoint::Checkpoints;
pub use counters::{ClassDecisions, Decision, Decisions};
pub use enforce::EnforceHook;
pub use grant::GrantPolicy;
pub use shares::OutstandingShares;
