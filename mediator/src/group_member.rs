//! One member's connection to its group room (docs/protocol.md §19.1): after a
//! checked `GroupHello`, send `GroupJoined` and a `Member` for everyone present,
//! then, for as long as the member stays (pinging at least every idle timeout),
//! a `Member` for each newcomer and a `MemberLeft` for each member that goes.

use std::net::SocketAddr;

use dhke::RoomTag;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use wire::{ClientMsg, ErrorCode, MediatorMsg, Role};

use crate::connection::{refuse, write_msg, End, FrameReader};
use crate::groups::{Notice, Other, Refusal};
use crate::metrics::Limit;
use crate::nameplates::Nameplate;
use crate::rooms::Arrival;
use crate::server::Admitted;

/// `Ping`s a member may send per idle timeout: ten times what our client sends.
const MAX_PINGS_PER_IDLE: u32 = 60;

pub(crate) async fn serve(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    tag: RoomTag,
    arrival: Arrival,
    nameplate: Option<Nameplate>,
) -> End {
    let shared = &admitted.shared;
    let own_no_relay = arrival.details.no_relay;
    let peer: SocketAddr = arrival.details.observed_addr;
    // This mediator hosts the relay of the newcomer's pairs, as the one that
    // completes a match does (§18.5).
    let relay = crate::relay::own_server(&shared.config);
    let joined = shared
        .groups
        .join(
            tag,
            admitted.id,
            arrival.group,
            arrival.details,
            nameplate,
            relay,
        )
        .await;
    let joined = match joined {
        Ok(joined) => joined,
        Err(Refusal::GroupMismatch) => {
            return refuse(
                ErrorCode::GroupMismatch,
                "the members of this group room use another DH group (--dh-group)",
            )
        }
        Err(Refusal::Full(cap)) => {
            return refuse(
                ErrorCode::RoomFull,
                format!("the group room is full ({cap} members)"),
            )
        }
        Err(Refusal::PerSource(cap)) => {
            shared.metrics.rejected(Limit::MembersPerIp);
            return refuse(
                ErrorCode::RoomFull,
                format!(
                    "the group room already has {cap} members from your address (one \
                     IPv4 address or IPv6 /64), the most this mediator admits from one \
                     (--max-members-per-ip)"
                ),
            );
        }
        Err(Refusal::TooManyRooms) => {
            shared.metrics.rejected(Limit::MaxRooms);
            return refuse(
                ErrorCode::TooManyConnections,
                "the mediator holds its maximum of rooms; try again later",
            );
        }
        Err(Refusal::Unavailable(message)) => {
            shared.metrics.rejected(Limit::RoomStore);
            return refuse(ErrorCode::TooManyConnections, message);
        }
    };
    let member = joined.member;
    tracing::debug!(room = %tag.short_hex(), member, "group member joined");
    let end = attend(admitted, reader, stream, peer, own_no_relay, joined).await;
    shared.groups.leave(&tag, member, admitted.id).await;
    end
}

async fn attend(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    peer: SocketAddr,
    own_no_relay: bool,
    joined: crate::groups::Joined,
) -> End {
    let shared = &admitted.shared;
    let config = &shared.config;
    let crate::groups::Joined {
        member,
        others,
        mut notices,
    } = joined;
    let welcome = MediatorMsg::GroupJoined {
        member,
        present: u32::try_from(others.len()).unwrap_or(u32::MAX),
        max_members: u32::try_from(shared.groups.max_members()).unwrap_or(u32::MAX),
    };
    if let Err(end) = write_msg(stream, welcome).await {
        return end;
    }
    for other in others {
        let msg = member_msg(admitted, Role::Joiner, other, peer, own_no_relay);
        if let Err(end) = write_msg(stream, msg).await {
            return end;
        }
    }
    let mut idle_until = Instant::now() + config.idle_timeout;
    // A member reports its path once (§4), and stays.
    let mut path_reported = false;
    // Pings counted per window of one idle timeout.
    let (mut window, mut pings) = (Instant::now(), 0u32);
    loop {
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => {
                return refuse(ErrorCode::ShuttingDown, "the mediator is shutting down");
            }
            notice = notices.recv() => {
                let msg = match notice {
                    Some(Notice::Arrived(other)) => {
                        member_msg(admitted, Role::Host, other, peer, own_no_relay)
                    }
                    Some(Notice::Left { member }) => MediatorMsg::MemberLeft { member },
                    // The table let go of us (we fell behind on notices).
                    None => return refuse(ErrorCode::Timeout, "too slow to read room notices"),
                };
                if let Err(end) = write_msg(stream, msg).await {
                    return end;
                }
            }
            () = sleep_until(idle_until) => {
                return refuse(ErrorCode::Timeout, "no Ping within the idle timeout");
            }
            msg = reader.next(stream) => match msg {
                Err(end) => return end,
                Ok(ClientMsg::Ping) => {
                    if window.elapsed() >= config.idle_timeout {
                        (window, pings) = (Instant::now(), 0);
                    }
                    pings += 1;
                    if pings > MAX_PINGS_PER_IDLE {
                        return refuse(ErrorCode::Malformed, "too many Pings");
                    }
                    idle_until = Instant::now() + config.idle_timeout;
                    if let Err(end) = write_msg(stream, MediatorMsg::Pong).await {
                        return end;
                    }
                }
                Ok(ClientMsg::SessionPath { path }) if !path_reported => {
                    path_reported = true;
                    shared.metrics.session_path(path);
                }
                Ok(ClientMsg::SessionPath { .. }) => {
                    return refuse(ErrorCode::Malformed, "one SessionPath per connection");
                }
                Ok(_) => return refuse(ErrorCode::Malformed, "unexpected message in a group room"),
            },
        }
    }
}

/// The `Member` message about `other`, whose link we play as `role`.
fn member_msg(
    admitted: &Admitted,
    role: Role,
    other: Other,
    your_addr: SocketAddr,
    own_no_relay: bool,
) -> MediatorMsg {
    let shared = &admitted.shared;
    // Both ends mint the same token: same pair id; the relay pairs by it.
    let relay = crate::connection::relay_offer_for(
        admitted,
        (own_no_relay, other.details.no_relay),
        &other.pair_id,
        shared.tokens.expiry(shared.config.relay_token_ttl),
        other.relay.as_deref(),
    );
    let d = other.details;
    MediatorMsg::Member {
        member: other.member,
        role,
        peer_name: d.name,
        public: d.public,
        observed_addr: d.observed_addr,
        listen_port: d.listen_port,
        local_addrs: d.local_addrs,
        your_addr,
        relay,
    }
}
