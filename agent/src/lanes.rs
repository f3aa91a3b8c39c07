//! Engine lanes: [`dispatch`] hands each assigned point to a lane (engine reuse, GPUs and
//! engine slots), [`runner`] is one lane running its points in order on its engine.

pub mod dispatch;
pub mod runner;
