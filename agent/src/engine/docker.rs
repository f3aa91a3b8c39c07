//! The `docker` runtime: the engine runs as a container of the sweep's image, created,
//! watched and removed through the Docker Engine API (bollard).
//!
//! What goes into a container is decided by [`ContainerPlan::create_body`] (in `plan`), a
//! pure function of the engine spec, the GPUs the engine holds and the host's
//! [`DockerConfig`](crate::config::DockerConfig), so the body for Intel XPU and NVIDIA hosts
//! is unit-tested without those GPUs; the running container, its logs and its exit are
//! [`Container`]'s (in `container`). Every container carries [`LABEL_MANAGED`] and
//! [`LABEL_AGENT`]: the agent only ever stops or removes containers that carry both with
//! its own name ([`remove_own_containers`]).

mod container;
mod plan;

pub use container::{
    Container, ContainerExit, READY_POLL, connect, local_images, remove_own_containers,
};
pub use plan::{
    Accelerator, ContainerPlan, LABEL_AGENT, LABEL_GPUS, LABEL_MANAGED, LABEL_SWEEP, container_name,
};
