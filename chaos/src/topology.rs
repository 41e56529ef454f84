//! Where each process lives: its own network namespace with its own address on a bridge
//! (`ip netns`, veth pairs; the chaos driver itself stays in the root namespace, on the
//! bridge), or loopback ports where namespaces cannot be made (not root). Faults on the
//! network are namespace operations: a link taken down (a partition both ways), blackhole
//! routes in a namespace to every other address (a partition one way: it still hears the
//! others), and `tc netem delay` on its egress (latency; where the kernel has no netem,
//! as this project's machine has not, a `tbf` rate limit slows the link instead).

use std::process::Command;

/// The namespaces' subnet; the driver is `.254` on the bridge.
const SUBNET: &str = "10.77.0";
const BRIDGE: &str = "mtrn-br";

/// How the processes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A namespace per process.
    Namespaces,
    /// Every process on 127.0.0.1, told apart by port: no network faults.
    Loopback,
}

/// One process's place: its namespace (if any) and IP.
#[derive(Debug, Clone)]
pub struct Place {
    pub name: String,
    pub namespace: Option<String>,
    pub ip: String,
}

/// Runs `ip` (or another tool) with `args`, failing with what it printed.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The topology of one run.
pub struct Topology {
    pub layout: Layout,
    places: Vec<Place>,
}

impl Topology {
    /// Makes a namespace for each of `names` (their index + 1 is their address's last
    /// byte), or falls back to loopback when `layout` asks for it or namespaces cannot be
    /// made here (the reason is returned for the log).
    pub fn build(names: &[&str], layout: Layout) -> (Topology, Option<String>) {
        let mut fallback = None;
        if layout == Layout::Namespaces {
            match Topology::namespaces(names) {
                Ok(topology) => return (topology, None),
                Err(reason) => {
                    Topology::remove(names);
                    fallback = Some(reason);
                }
            }
        }
        let places = names
            .iter()
            .map(|name| Place {
                name: name.to_string(),
                namespace: None,
                ip: "127.0.0.1".into(),
            })
            .collect();
        let topology = Topology {
            layout: Layout::Loopback,
            places,
        };
        (topology, fallback)
    }

    fn namespaces(names: &[&str]) -> Result<Topology, String> {
        // Leftovers of a run that was killed.
        Topology::remove(names);
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{SUBNET}.254/24"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        let mut places = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let namespace = format!("mtrn-{name}");
            let host = host_link(name);
            let ip = format!("{SUBNET}.{}", index + 1);
            run("ip", &["netns", "add", &namespace])?;
            run(
                "ip",
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                    &namespace,
                ],
            )?;
            run("ip", &["link", "set", &host, "master", BRIDGE, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &namespace,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", &namespace, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &namespace, "link", "set", "lo", "up"])?;
            places.push(Place {
                name: name.to_string(),
                namespace: Some(namespace),
                ip,
            });
        }
        Ok(Topology {
            layout: Layout::Namespaces,
            places,
        })
    }

    fn remove(names: &[&str]) {
        for name in names {
            let _ = run("ip", &["netns", "del", &format!("mtrn-{name}")]);
            let _ = run("ip", &["link", "del", &host_link(name)]);
        }
        let _ = run("ip", &["link", "del", BRIDGE]);
    }

    pub fn place(&self, name: &str) -> &Place {
        self.places
            .iter()
            .find(|place| place.name == name)
            .unwrap_or_else(|| panic!("no place named {name}"))
    }

    /// Cuts `name` off from every other process, both ways (its link goes down).
    pub fn partition(&self, name: &str) -> Result<(), String> {
        run("ip", &["link", "set", &host_link(name), "down"])
    }

    /// The addresses a process in `name` sends to: every other place, and the driver.
    fn others(&self, name: &str) -> Vec<String> {
        self.places
            .iter()
            .filter(|place| place.name != name)
            .map(|place| place.ip.clone())
            .chain([format!("{SUBNET}.254")])
            .collect()
    }

    /// Drops every packet `name` sends (a one-way partition: it still hears the others).
    pub fn drop_outbound(&self, name: &str) -> Result<(), String> {
        let namespace = self.place(name).namespace.clone().expect("a namespace");
        for ip in self.others(name) {
            run(
                "ip",
                &[
                    "-n",
                    &namespace,
                    "route",
                    "add",
                    "blackhole",
                    &format!("{ip}/32"),
                ],
            )?;
        }
        Ok(())
    }

    /// Slows what `name` sends: `tc netem` delays each packet by `delay_ms` (give or take
    /// a quarter); without netem, a `tbf` of 256 kbit/s queues it. Returns which.
    pub fn delay(&self, name: &str, delay_ms: u64) -> Result<&'static str, String> {
        let namespace = self.place(name).namespace.clone().expect("a namespace");
        let jitter = (delay_ms / 4).max(1);
        let delay = format!("{delay_ms}ms");
        let jitter = format!("{jitter}ms");
        let netem = [
            "-n", &namespace, "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &delay,
            &jitter,
        ];
        match run("tc", &netem) {
            Ok(()) => Ok("netem delay"),
            Err(error) if error.contains("unknown") => {
                let tbf = [
                    "-n", &namespace, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate",
                    "256kbit", "burst", "4kb", "latency", "500ms",
                ];
                run("tc", &tbf).map(|()| "tbf 256 kbit/s (no netem in this kernel)")
            }
            Err(error) => Err(error),
        }
    }

    /// Undoes every network fault on `name`.
    pub fn heal(&self, name: &str) -> Result<(), String> {
        run("ip", &["link", "set", &host_link(name), "up"])?;
        let namespace = self.place(name).namespace.clone().expect("a namespace");
        // What is not there to undo is fine: the fault was another one.
        let _ = run(
            "tc",
            &["-n", &namespace, "qdisc", "del", "dev", "eth0", "root"],
        );
        for ip in self.others(name) {
            let _ = run(
                "ip",
                &[
                    "-n",
                    &namespace,
                    "route",
                    "del",
                    "blackhole",
                    &format!("{ip}/32"),
                ],
            );
        }
        Ok(())
    }

    /// Removes the namespaces and the bridge.
    pub fn tear_down(&self) {
        if self.layout == Layout::Namespaces {
            let names: Vec<&str> = self.places.iter().map(|p| p.name.as_str()).collect();
            Topology::remove(&names);
        }
    }
}

fn host_link(name: &str) -> String {
    format!("mtrn-{name}-h")
}
