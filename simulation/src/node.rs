//! A simulated machine: a madsim node and the disk that outlives its crashes.

use std::future::Future;
use std::net::IpAddr;

use madsim::runtime::{Handle, NodeHandle};
use metronome_core::rt::disk::{Disk, SimDisk, SimFaults};
use metronome_core::rt::rand;

/// A madsim node with its own [`SimDisk`]. The node's main future is rebuilt from `main`
/// on every restart, with a fresh [`Disk`] over the same simulated disk.
pub struct SimNode {
    pub name: String,
    pub ip: IpAddr,
    pub disk: SimDisk,
    node: NodeHandle,
}

impl SimNode {
    /// Creates and starts the node.
    pub fn start<F, Fut>(name: &str, ip: IpAddr, faults: SimFaults, main: F) -> SimNode
    where
        F: Fn(Disk) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let disk = SimDisk::with_faults(rand::seed(), faults);
        let node_disk = disk.clone();
        let node = Handle::current()
            .create_node()
            .name(name)
            .ip(ip)
            .init(move || main(Disk::sim(node_disk.clone())))
            .build();
        tracing::info!(node = name, %ip, disk_seed = disk.seed(), "simulated node started");
        SimNode {
            name: name.to_string(),
            ip,
            disk,
            node,
        }
    }

    /// A node whose main future does nothing but stay alive (madsim ends a node when its
    /// main future returns): a host for tasks spawned with [`SimNode::handle`].
    pub fn idle(name: &str, ip: IpAddr) -> SimNode {
        SimNode::start(name, ip, SimFaults::default(), |_| {
            std::future::pending::<()>()
        })
    }

    /// The node's madsim handle, for spawning tasks on it.
    pub fn handle(&self) -> &NodeHandle {
        &self.node
    }

    /// Power loss: the process dies and the disk keeps only what was durable.
    pub fn power_off(&self) {
        Handle::current().kill(self.node.id());
        self.disk.crash();
        tracing::info!(node = %self.name, "power loss");
    }

    /// Power loss followed by a restart of the node's main future.
    pub fn power_cycle(&self) {
        self.power_off();
        Handle::current().restart(self.node.id());
    }
}
