//! Every request to the metasrv and every reply: one enum each, carried from the client
//! to the service's handler (`service.rs`), and their wire form. Catalog commands and the
//! catalog travel in their one serialized form, the JSON the catalog's journal stores
//! (`metronome_core::journal`): nothing here mirrors a catalog type, so a new command or
//! field is a change to `catalog.rs` alone. A new metasrv RPC is a variant here (with its
//! encoding and decoding), a table in the schema and an arm in `MetaService::handle`.
//!
//! Decoding is of untrusted bytes: a malformed or unknown command is an error naming what
//! is wrong (serde_json bounds nesting), never a panic.

use std::sync::Arc;

use metronome_core::data::RegionId;
use metronome_wire::frame::{self, Body};
use metronome_wire::region_reply::{read_shard_stats, shard_stats};
use metronome_wire::ShardStats;
use metronome_wire::{convert, fb};

use crate::catalog::{Catalog, Command, Route};
use crate::lease::Grant;
use crate::replicas::{Replica, ReplicationGrants};

/// A request to the metasrv.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaRequest {
    /// Applies a catalog command durably.
    Execute(Command),
    /// The whole catalog.
    Catalog,
    /// A datanode's periodic report that it is alive, with its shards' figures.
    Heartbeat {
        datanode: u64,
        shards: Vec<ShardStats>,
        /// The regions whose copy on the datanode is quarantined.
        quarantined: Vec<RegionId>,
    },
    /// Which datanodes have heartbeated, and how long ago.
    Liveness,
    /// A message between metasrv replicas, opaque here: openraft's request in serde JSON.
    Raft { kind: RaftKind, payload: Vec<u8> },
    /// The replica's raft state, as it sees it.
    RaftStatus,
    /// Routes for this many new regions: the leader places them over the datanodes that
    /// heartbeat to it (`Catalog::place_among`).
    Place { count: u32 },
    /// Adds or removes a metasrv replica; the reply is the leader's raft state after it.
    ChangeMembership(MembershipChange),
    /// The leader's catalog version, once it is past `since` or a few seconds passed
    /// ([`MetaReply::CatalogVersion`]): a frontend's way to hear of others' changes.
    WatchCatalog { since: u64 },
}

/// A change to the metasrv's raft membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Replica `id`, serving at `addr`, catches up as a learner and then votes.
    Add { id: u64, addr: String },
    /// Replica `id` stops voting and leaves.
    Remove { id: u64 },
}

/// A metasrv replica's raft state, as it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub last_log_index: u64,
    pub last_applied_index: u64,
    pub voters: Vec<u64>,
    /// The catalog's version as this replica applied it.
    pub catalog_version: u64,
}

/// Which raft message a [`MetaRequest::Raft`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// What the metasrv leader heard of the datanodes: (datanode, milliseconds since its
/// last heartbeat), and the copies each names quarantined, as (datanode, region).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    pub datanodes: Vec<(u64, u64)>,
    pub quarantined: Vec<(u64, RegionId)>,
}

/// A reply to a [`MetaRequest`] that succeeded.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaReply {
    /// The catalog's version after the command (unchanged if it changed nothing).
    Executed {
        version: u64,
        applied: bool,
    },
    /// Shared: the service answers with its snapshot, not a copy of it.
    Catalog(Arc<Catalog>),
    /// The catalog version the metasrv has reached, and the regions it leases to the
    /// datanode that heartbeated, with their epochs ([`crate::lease`]).
    Heartbeat {
        catalog_version: u64,
        leases: Vec<Grant>,
        /// The copies it follows, and its own regions' followers.
        replication: ReplicationGrants,
    },
    Liveness(Liveness),
    /// openraft's reply to a [`MetaRequest::Raft`], in serde JSON.
    Raft(Vec<u8>),
    /// The replica asked is not the raft leader; the leader, if one is known, by id and
    /// address.
    NotLeader {
        leader: Option<(u64, Option<String>)>,
    },
    RaftStatus(RaftStatus),
    /// The routes a [`MetaRequest::Place`] asked for, in order.
    Placed(Vec<Route>),
    /// The catalog's version.
    CatalogVersion(u64),
}

impl MetaRequest {
    pub fn encode(&self) -> Body {
        frame::request_body(|builder| match self {
            MetaRequest::Execute(command) => {
                let json = serde_json::to_vec(command).expect("a catalog command serializes");
                let command_json = Some(builder.create_vector(&json));
                let args = fb::ExecuteCatalogCommandArgs { command_json };
                let table = fb::ExecuteCatalogCommand::create(builder, &args);
                (fb::Request::ExecuteCatalogCommand, table.as_union_value())
            }
            MetaRequest::Catalog => {
                let table = fb::GetCatalog::create(builder, &fb::GetCatalogArgs {});
                (fb::Request::GetCatalog, table.as_union_value())
            }
            MetaRequest::Heartbeat {
                datanode,
                shards,
                quarantined,
            } => {
                let stats: Vec<fb::ShardStats> = shards.iter().map(shard_stats).collect();
                let shards = builder.create_vector(&stats);
                let quarantined: Vec<fb::RegionId> = quarantined
                    .iter()
                    .map(|id| convert::region_id(*id))
                    .collect();
                let quarantined = builder.create_vector(&quarantined);
                let args = fb::HeartbeatArgs {
                    datanode: *datanode,
                    shards: Some(shards),
                    quarantined: Some(quarantined),
                };
                let table = fb::Heartbeat::create(builder, &args);
                (fb::Request::Heartbeat, table.as_union_value())
            }
            MetaRequest::Liveness => {
                let table = fb::GetLiveness::create(builder, &fb::GetLivenessArgs {});
                (fb::Request::GetLiveness, table.as_union_value())
            }
            MetaRequest::Raft { kind, payload } => {
                let kind = match kind {
                    RaftKind::AppendEntries => fb::RaftMessageKind::AppendEntries,
                    RaftKind::Vote => fb::RaftMessageKind::Vote,
                    RaftKind::InstallSnapshot => fb::RaftMessageKind::InstallSnapshot,
                };
                let payload = Some(builder.create_vector(payload));
                let table =
                    fb::RaftMessage::create(builder, &fb::RaftMessageArgs { kind, payload });
                (fb::Request::RaftMessage, table.as_union_value())
            }
            MetaRequest::RaftStatus => {
                let table = fb::GetRaftStatus::create(builder, &fb::GetRaftStatusArgs {});
                (fb::Request::GetRaftStatus, table.as_union_value())
            }
            MetaRequest::Place { count } => {
                let table =
                    fb::PlaceRegions::create(builder, &fb::PlaceRegionsArgs { count: *count });
                (fb::Request::PlaceRegions, table.as_union_value())
            }
            MetaRequest::ChangeMembership(change) => {
                let args = match change {
                    MembershipChange::Add { id, addr } => fb::ChangeMembershipArgs {
                        add_id: *id,
                        add_addr: Some(builder.create_string(addr)),
                        remove_id: 0,
                    },
                    MembershipChange::Remove { id } => fb::ChangeMembershipArgs {
                        add_id: 0,
                        add_addr: None,
                        remove_id: *id,
                    },
                };
                let table = fb::ChangeMembership::create(builder, &args);
                (fb::Request::ChangeMembership, table.as_union_value())
            }
            MetaRequest::WatchCatalog { since } => {
                let table =
                    fb::WatchCatalog::create(builder, &fb::WatchCatalogArgs { since: *since });
                (fb::Request::WatchCatalog, table.as_union_value())
            }
        })
    }

    /// A verified request message as a request; what this build cannot accept is an
    /// error naming it.
    pub fn decode(request: fb::RequestMessage<'_>) -> Result<MetaRequest, String> {
        Ok(match request.body_type() {
            fb::Request::ExecuteCatalogCommand => {
                let table = request.body_as_execute_catalog_command().expect("verified");
                MetaRequest::Execute(
                    serde_json::from_slice(table.command_json().bytes())
                        .map_err(|error| format!("invalid catalog command: {error}"))?,
                )
            }
            fb::Request::GetCatalog => MetaRequest::Catalog,
            fb::Request::Heartbeat => {
                let heartbeat = request.body_as_heartbeat().expect("verified");
                MetaRequest::Heartbeat {
                    datanode: heartbeat.datanode(),
                    shards: heartbeat.shards().iter().map(read_shard_stats).collect(),
                    quarantined: heartbeat
                        .quarantined()
                        .map(|ids| ids.iter().map(convert::read_region_id).collect())
                        .unwrap_or_default(),
                }
            }
            fb::Request::GetLiveness => MetaRequest::Liveness,
            fb::Request::RaftMessage => {
                let message = request.body_as_raft_message().expect("verified");
                let kind = match message.kind() {
                    fb::RaftMessageKind::AppendEntries => RaftKind::AppendEntries,
                    fb::RaftMessageKind::Vote => RaftKind::Vote,
                    fb::RaftMessageKind::InstallSnapshot => RaftKind::InstallSnapshot,
                    other => return Err(format!("unknown raft message kind {other:?}")),
                };
                MetaRequest::Raft {
                    kind,
                    payload: message.payload().bytes().to_vec(),
                }
            }
            fb::Request::GetRaftStatus => MetaRequest::RaftStatus,
            fb::Request::PlaceRegions => MetaRequest::Place {
                count: request.body_as_place_regions().expect("verified").count(),
            },
            fb::Request::ChangeMembership => {
                let change = request.body_as_change_membership().expect("verified");
                MetaRequest::ChangeMembership(
                    match (change.add_id(), change.add_addr(), change.remove_id()) {
                        (id, Some(addr), 0) if id != 0 && !addr.is_empty() => {
                            MembershipChange::Add {
                                id,
                                addr: addr.to_string(),
                            }
                        }
                        (0, None, id) if id != 0 => MembershipChange::Remove { id },
                        _ => {
                            return Err("a membership change adds one replica (a non-zero id \
                                        and an address) or removes one (a non-zero id)"
                                .to_string())
                        }
                    },
                )
            }
            fb::Request::WatchCatalog => MetaRequest::WatchCatalog {
                since: request.body_as_watch_catalog().expect("verified").since(),
            },
            other => return Err(format!("the metasrv does not serve {other:?} requests")),
        })
    }
}

impl MetaReply {
    pub fn encode(&self) -> Body {
        frame::reply_body(|builder| match self {
            MetaReply::Executed { version, applied } => {
                let args = fb::CatalogCommandReplyArgs {
                    version: *version,
                    applied: *applied,
                };
                let table = fb::CatalogCommandReply::create(builder, &args);
                (fb::Reply::CatalogCommandReply, table.as_union_value())
            }
            MetaReply::Catalog(catalog) => {
                let json = serde_json::to_vec(catalog.as_ref()).expect("the catalog serializes");
                let catalog_json = Some(builder.create_vector(&json));
                let table = fb::Catalog::create(builder, &fb::CatalogArgs { catalog_json });
                (fb::Reply::Catalog, table.as_union_value())
            }
            MetaReply::Heartbeat {
                catalog_version,
                leases,
                replication,
            } => {
                let grants = |grants: &[Grant]| -> Vec<fb::RegionLease> {
                    grants
                        .iter()
                        .map(|(region, epoch)| {
                            fb::RegionLease::new(
                                &metronome_wire::convert::region_id(*region),
                                *epoch,
                            )
                        })
                        .collect()
                };
                let leases = Some(builder.create_vector(&grants(leases)));
                let follows = Some(builder.create_vector(&grants(&replication.follows)));
                let learns = Some(builder.create_vector(&grants(&replication.learns)));
                let learners: Vec<(RegionId, Vec<Replica>)> = replication
                    .learners
                    .iter()
                    .map(|(region, learner)| (*region, vec![*learner]))
                    .collect();
                let moving: Vec<(RegionId, Vec<Replica>)> = replication
                    .moving
                    .iter()
                    .map(|(region, to)| (*region, vec![*to]))
                    .collect();
                let mut per_region = |lists: &[(RegionId, Vec<Replica>)]| {
                    let tables: Vec<_> = lists
                        .iter()
                        .map(|(region, followers)| {
                            let followers: Vec<fb::Replica> = followers
                                .iter()
                                .map(|f| fb::Replica::new(f.datanode, f.shard))
                                .collect();
                            let followers = builder.create_vector(&followers);
                            fb::RegionFollowers::create(
                                builder,
                                &fb::RegionFollowersArgs {
                                    region: Some(&metronome_wire::convert::region_id(*region)),
                                    followers: Some(followers),
                                },
                            )
                        })
                        .collect();
                    builder.create_vector(&tables)
                };
                let followers = Some(per_region(&replication.followers));
                let learners = Some(per_region(&learners));
                let moving_to = Some(per_region(&moving));
                let peers: Vec<_> = replication
                    .peers
                    .iter()
                    .map(|(id, addr)| {
                        let addr = builder.create_string(addr);
                        fb::DatanodeAddr::create(
                            builder,
                            &fb::DatanodeAddrArgs {
                                id: *id,
                                addr: Some(addr),
                            },
                        )
                    })
                    .collect();
                let peers = Some(builder.create_vector(&peers));
                let args = fb::HeartbeatReplyArgs {
                    catalog_version: *catalog_version,
                    leases,
                    follows,
                    followers,
                    peers,
                    learns,
                    learners,
                    moving_to,
                };
                let table = fb::HeartbeatReply::create(builder, &args);
                (fb::Reply::HeartbeatReply, table.as_union_value())
            }
            MetaReply::Liveness(liveness) => {
                let entries: Vec<fb::DatanodeLiveness> = liveness
                    .datanodes
                    .iter()
                    .map(|(datanode, since)| fb::DatanodeLiveness::new(*datanode, *since))
                    .collect();
                let datanodes = Some(builder.create_vector(&entries));
                let copies: Vec<fb::QuarantinedCopy> = liveness
                    .quarantined
                    .iter()
                    .map(|(datanode, region)| {
                        fb::QuarantinedCopy::new(*datanode, &convert::region_id(*region))
                    })
                    .collect();
                let quarantined = Some(builder.create_vector(&copies));
                let args = fb::LivenessReplyArgs {
                    datanodes,
                    quarantined,
                };
                let table = fb::LivenessReply::create(builder, &args);
                (fb::Reply::LivenessReply, table.as_union_value())
            }
            MetaReply::Raft(payload) => {
                let payload = Some(builder.create_vector(payload));
                let table =
                    fb::RaftMessageReply::create(builder, &fb::RaftMessageReplyArgs { payload });
                (fb::Reply::RaftMessageReply, table.as_union_value())
            }
            MetaReply::NotLeader { leader } => {
                let (leader_id, addr) = match leader {
                    Some((id, addr)) => (*id, addr.as_deref()),
                    None => (0, None),
                };
                let leader_addr = addr.map(|addr| builder.create_string(addr));
                let args = fb::NotLeaderArgs {
                    leader_id,
                    leader_addr,
                };
                let table = fb::NotLeader::create(builder, &args);
                (fb::Reply::NotLeader, table.as_union_value())
            }
            MetaReply::RaftStatus(status) => {
                let state = Some(builder.create_string(&status.state));
                let voters = Some(builder.create_vector(&status.voters));
                let args = fb::RaftStatusArgs {
                    node_id: status.node_id,
                    term: status.term,
                    leader_id: status.leader.unwrap_or(0),
                    state,
                    last_log_index: status.last_log_index,
                    last_applied_index: status.last_applied_index,
                    voters,
                    catalog_version: status.catalog_version,
                };
                let table = fb::RaftStatus::create(builder, &args);
                (fb::Reply::RaftStatus, table.as_union_value())
            }
            MetaReply::Placed(routes) => {
                let routes: Vec<fb::Route> = routes
                    .iter()
                    .map(|route| fb::Route::new(route.datanode, route.shard))
                    .collect();
                let routes = Some(builder.create_vector(&routes));
                let table = fb::RegionsPlaced::create(builder, &fb::RegionsPlacedArgs { routes });
                (fb::Reply::RegionsPlaced, table.as_union_value())
            }
            MetaReply::CatalogVersion(version) => {
                let args = fb::CatalogVersionArgs { version: *version };
                let table = fb::CatalogVersion::create(builder, &args);
                (fb::Reply::CatalogVersion, table.as_union_value())
            }
        })
    }

    /// A verified reply (not an error) as a reply; `None` for a kind this is not.
    pub fn decode(reply: fb::ReplyMessage<'_>) -> Option<Result<MetaReply, String>> {
        Some(Ok(match reply.body_type() {
            fb::Reply::CatalogCommandReply => {
                let table = reply.body_as_catalog_command_reply()?;
                MetaReply::Executed {
                    version: table.version(),
                    applied: table.applied(),
                }
            }
            fb::Reply::Catalog => {
                let table = reply.body_as_catalog()?;
                match serde_json::from_slice(table.catalog_json().bytes()) {
                    Ok(catalog) => MetaReply::Catalog(Arc::new(catalog)),
                    Err(error) => return Some(Err(format!("invalid catalog: {error}"))),
                }
            }
            fb::Reply::HeartbeatReply => {
                let table = reply.body_as_heartbeat_reply()?;
                let grants = |leases: Option<flatbuffers::Vector<'_, fb::RegionLease>>| {
                    leases
                        .iter()
                        .flatten()
                        .map(|lease| {
                            (
                                metronome_wire::convert::read_region_id(lease.region()),
                                lease.epoch(),
                            )
                        })
                        .collect::<Vec<Grant>>()
                };
                let per_region = |lists: Option<
                    flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::RegionFollowers<'_>>>,
                >| {
                    lists
                        .iter()
                        .flatten()
                        .map(|one| {
                            (
                                metronome_wire::convert::read_region_id(one.region()),
                                one.followers()
                                    .iter()
                                    .map(|f| Replica {
                                        datanode: f.datanode(),
                                        shard: f.shard(),
                                    })
                                    .collect::<Vec<Replica>>(),
                            )
                        })
                        .collect::<Vec<_>>()
                };
                let followers = per_region(table.followers());
                // One learner, one target per region: a list of any other length is not.
                let one_each = |lists: Vec<(RegionId, Vec<Replica>)>| {
                    lists
                        .into_iter()
                        .filter_map(|(region, list)| match list.as_slice() {
                            [one] => Some((region, *one)),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                };
                let learners = one_each(per_region(table.learners()));
                let moving = one_each(per_region(table.moving_to()));
                let peers = table
                    .peers()
                    .iter()
                    .flatten()
                    .map(|peer| (peer.id(), peer.addr().to_string()))
                    .collect();
                MetaReply::Heartbeat {
                    catalog_version: table.catalog_version(),
                    leases: grants(table.leases()),
                    replication: ReplicationGrants {
                        follows: grants(table.follows()),
                        followers,
                        learns: grants(table.learns()),
                        learners,
                        moving,
                        peers,
                    },
                }
            }
            fb::Reply::LivenessReply => {
                let table = reply.body_as_liveness_reply()?;
                MetaReply::Liveness(Liveness {
                    datanodes: table
                        .datanodes()
                        .iter()
                        .map(|entry| (entry.datanode(), entry.since_heartbeat_ms()))
                        .collect(),
                    quarantined: table
                        .quarantined()
                        .map(|copies| {
                            copies
                                .iter()
                                .map(|c| (c.datanode(), convert::read_region_id(c.region())))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            }
            fb::Reply::RaftMessageReply => MetaReply::Raft(
                reply
                    .body_as_raft_message_reply()?
                    .payload()
                    .bytes()
                    .to_vec(),
            ),
            fb::Reply::NotLeader => {
                let table = reply.body_as_not_leader()?;
                MetaReply::NotLeader {
                    leader: (table.leader_id() != 0)
                        .then(|| (table.leader_id(), table.leader_addr().map(str::to_string))),
                }
            }
            fb::Reply::RaftStatus => {
                let table = reply.body_as_raft_status()?;
                MetaReply::RaftStatus(RaftStatus {
                    node_id: table.node_id(),
                    term: table.term(),
                    leader: (table.leader_id() != 0).then_some(table.leader_id()),
                    state: table.state().to_string(),
                    last_log_index: table.last_log_index(),
                    last_applied_index: table.last_applied_index(),
                    voters: table.voters().iter().collect(),
                    catalog_version: table.catalog_version(),
                })
            }
            fb::Reply::RegionsPlaced => MetaReply::Placed(
                reply
                    .body_as_regions_placed()?
                    .routes()
                    .iter()
                    .map(|route| Route::new(route.datanode(), route.shard()))
                    .collect(),
            ),
            fb::Reply::CatalogVersion => {
                MetaReply::CatalogVersion(reply.body_as_catalog_version()?.version())
            }
            _ => return None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{MetricMetadata, Route, DEFAULT_DATABASE};
    use metronome_core::data::{FieldColumn, FieldType, RegionSchema, TimeUnit};
    use metronome_wire::frame::{FrameKind, Header};

    fn commands() -> Vec<Command> {
        let to = vec![Route::new(0, 1), Route::new(7, 0)];
        vec![
            Command::CreateDatabase { name: "ops".into() },
            Command::CreateMetricRegions {
                database: DEFAULT_DATABASE.into(),
                routes: to.clone(),
                replicas: 1,
            },
            Command::EnsureMetric {
                database: DEFAULT_DATABASE.into(),
                name: "up".into(),
                labels: vec!["instance".into(), "job".into()],
            },
            Command::CreateTable {
                database: "ops".into(),
                name: "cpu".into(),
                schema: RegionSchema {
                    tags: vec!["host".into()],
                    time_index: "ts".into(),
                    time_unit: TimeUnit::Millisecond,
                    fields: vec![FieldColumn {
                        name: "usage".into(),
                        field_type: FieldType::Float64,
                    }],
                },
                ttl_ms: Some(86_400_000),
                routes: to,
                if_not_exists: true,
                partition_columns: vec!["host".into()],
                column_order: vec!["ts".into(), "host".into(), "usage".into()],
                replicas: 1,
            },
            Command::AddColumns {
                database: "ops".into(),
                name: "cpu".into(),
                tags: vec!["dc".into()],
                fields: vec![FieldColumn {
                    name: "note".into(),
                    field_type: FieldType::String,
                }],
            },
            Command::DropTable {
                database: "ops".into(),
                name: "gone".into(),
                if_exists: true,
            },
            Command::SetMetricMetadata {
                database: DEFAULT_DATABASE.into(),
                name: "up".into(),
                metadata: MetricMetadata {
                    metric_type: "gauge".into(),
                    help: "Whether the target is up.".into(),
                    unit: String::new(),
                },
            },
            Command::Batch(vec![
                Command::EnsureMetric {
                    database: DEFAULT_DATABASE.into(),
                    name: "http_requests_total".into(),
                    labels: vec!["code".into()],
                },
                Command::CreateDatabase {
                    name: "ops2".into(),
                },
            ]),
        ]
    }

    fn header(kind: FrameKind) -> Header {
        Header {
            kind,
            request_id: 1,
            last: true,
        }
    }

    fn round_trip(request: &MetaRequest) -> Result<MetaRequest, String> {
        let frame = request.encode().into_frame(header(FrameKind::Request));
        MetaRequest::decode(frame::verify_request(&frame).unwrap())
    }

    fn reply_round_trip(reply: &MetaReply) -> MetaReply {
        let frame = reply.encode().into_frame(header(FrameKind::Reply));
        MetaReply::decode(frame::verify_reply(&frame).unwrap())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn requests_and_replies_and_the_catalog_they_build_round_trip() {
        let mut state = Catalog::default();
        for original in commands() {
            let decoded = round_trip(&MetaRequest::Execute(original.clone())).unwrap();
            assert_eq!(decoded, MetaRequest::Execute(original.clone()));
            state.apply(&original).unwrap();
        }
        assert!(state.table("ops", "cpu").is_ok() && state.table("public", "up").is_ok());
        let heartbeat = MetaRequest::Heartbeat {
            datanode: 7,
            shards: vec![ShardStats {
                shard: 1,
                flushes: 3,
                ..ShardStats::default()
            }],
            quarantined: vec![
                metronome_core::data::RegionId::new(3, 1),
                metronome_core::data::RegionId::new(9, 0),
            ],
        };
        let raft = MetaRequest::Raft {
            kind: RaftKind::Vote,
            payload: b"{\"vote\":1}".to_vec(),
        };
        for request in [
            MetaRequest::Catalog,
            heartbeat,
            raft,
            MetaRequest::RaftStatus,
            MetaRequest::Place { count: 7 },
            MetaRequest::ChangeMembership(MembershipChange::Add {
                id: 4,
                addr: "10.0.0.4:4100".into(),
            }),
            MetaRequest::ChangeMembership(MembershipChange::Remove { id: 2 }),
            MetaRequest::WatchCatalog { since: 41 },
        ] {
            assert_eq!(round_trip(&request), Ok(request));
        }
        for reply in [
            MetaReply::Liveness(Liveness {
                datanodes: vec![(1, 900), (2, 60_000)],
                quarantined: vec![(2, metronome_core::data::RegionId::new(3, 1))],
            }),
            MetaReply::Liveness(Liveness::default()),
            MetaReply::Catalog(Arc::new(state.clone())),
            MetaReply::Executed {
                version: 9,
                applied: true,
            },
            MetaReply::Heartbeat {
                catalog_version: 4,
                leases: vec![
                    (metronome_core::data::RegionId::new(3, 0), 1),
                    (metronome_core::data::RegionId::new(3, 5), 7),
                ],
                replication: ReplicationGrants {
                    follows: vec![(metronome_core::data::RegionId::new(4, 1), 2)],
                    followers: vec![(
                        metronome_core::data::RegionId::new(3, 0),
                        vec![Replica {
                            datanode: 5,
                            shard: 1,
                        }],
                    )],
                    learns: vec![(metronome_core::data::RegionId::new(4, 2), 3)],
                    learners: vec![(
                        metronome_core::data::RegionId::new(3, 5),
                        Replica {
                            datanode: 6,
                            shard: 0,
                        },
                    )],
                    moving: vec![(
                        metronome_core::data::RegionId::new(3, 0),
                        Replica {
                            datanode: 5,
                            shard: 1,
                        },
                    )],
                    peers: vec![(5, "10.0.0.5:4100".into())],
                },
            },
            MetaReply::Raft(b"{}".to_vec()),
            MetaReply::NotLeader { leader: None },
            MetaReply::Placed(vec![Route::new(3, 1), Route::new(1, 0)]),
            MetaReply::CatalogVersion(42),
            MetaReply::RaftStatus(RaftStatus {
                node_id: 2,
                term: 5,
                leader: Some(3),
                state: "Follower".into(),
                last_log_index: 40,
                last_applied_index: 39,
                voters: vec![1, 2, 3],
                catalog_version: 12,
            }),
            MetaReply::NotLeader {
                leader: Some((2, Some("10.0.0.2:4000".into()))),
            },
        ] {
            assert_eq!(reply_round_trip(&reply), reply);
        }
    }

    #[test]
    fn bytes_that_are_no_command_are_an_error_naming_it() {
        let body = frame::request_body(|builder| {
            let command_json = Some(builder.create_vector(b"{\"DropEverything\": {}}"));
            let args = fb::ExecuteCatalogCommandArgs { command_json };
            let table = fb::ExecuteCatalogCommand::create(builder, &args);
            (fb::Request::ExecuteCatalogCommand, table.as_union_value())
        });
        let frame = body.into_frame(header(FrameKind::Request));
        let error = MetaRequest::decode(frame::verify_request(&frame).unwrap()).unwrap_err();
        assert!(error.contains("invalid catalog command"), "{error}");
        assert!(error.contains("DropEverything"), "{error}");
    }
}
