//! One readable example per lease rule.

mod support;

use std::time::Duration;

use support::at_ms;
use taskforge_core::lease::{Lease, LeaseConfig, LeaseEvent, LeaseRequest, Role, StepDown};

fn config() -> LeaseConfig {
    LeaseConfig {
        duration: Duration::from_millis(4_000),
        renew_every: Duration::from_millis(1_000),
        retry_every: Duration::from_millis(500),
        margin: Duration::from_millis(500),
    }
}

fn events(lease: &mut Lease) -> Vec<LeaseEvent> {
    std::iter::from_fn(|| lease.poll_event()).collect()
}

/// A standby that asked at t=0 and was granted epoch 7 at t=10.
fn leader() -> Lease {
    let mut lease = Lease::new(at_ms(0), config());
    let Some(LeaseRequest::Acquire { request }) = lease.poll_request(at_ms(0)) else {
        panic!("a standby asks for the lease at once");
    };
    lease.granted(at_ms(10), request, 7);
    assert_eq!(events(&mut lease), [LeaseEvent::BecameLeader { epoch: 7 }]);
    lease
}

#[test]
fn a_leader_acts_until_its_grant_could_expire_counted_from_when_it_asked() {
    let lease = leader();
    // Asked at 0: the grant lasts 4 s from some moment after 0; the leader
    // stops 500 ms before 4 s.
    assert_eq!(lease.writable_epoch(at_ms(3_499)), Some(7));
    assert_eq!(lease.writable_epoch(at_ms(3_500)), None);
}

#[test]
fn renewals_keep_the_lease_and_unanswered_ones_let_it_lapse() {
    let mut lease = leader();
    assert_eq!(lease.poll_request(at_ms(999)), None, "renews every second");
    let Some(LeaseRequest::Renew { request, epoch: 7 }) = lease.poll_request(at_ms(1_000)) else {
        panic!("the leader renews its own epoch");
    };
    lease.granted(at_ms(1_020), request, 7);
    assert_eq!(lease.writable_epoch(at_ms(4_499)), Some(7));
    // The store stops answering: renewals fail, the lease lapses.
    let mut now = 2_000;
    while now < 4_500 {
        if let Some(request) = lease.poll_request(at_ms(now)) {
            lease.failed(at_ms(now + 100), request.id());
        }
        now += 100;
    }
    lease.handle_timeout(at_ms(4_500));
    assert_eq!(lease.role(), Role::Standby);
    assert_eq!(
        events(&mut lease),
        [LeaseEvent::SteppedDown {
            epoch: 7,
            reason: StepDown::Expired
        }]
    );
}

#[test]
fn a_refused_renewal_means_another_term_began() {
    let mut lease = leader();
    let request = lease.poll_request(at_ms(1_000)).expect("a renewal");
    lease.refused(at_ms(1_010), request.id(), 8);
    assert_eq!(lease.writable_epoch(at_ms(1_010)), None);
    assert_eq!(
        events(&mut lease),
        [LeaseEvent::SteppedDown {
            epoch: 7,
            reason: StepDown::Deposed { by_epoch: 8 }
        }]
    );
    // Back to asking, after the retry interval.
    assert_eq!(lease.poll_request(at_ms(1_400)), None);
    assert!(matches!(
        lease.poll_request(at_ms(1_510)),
        Some(LeaseRequest::Acquire { .. })
    ));
}

#[test]
fn a_fenced_write_deposes_the_leader_at_once() {
    let mut lease = leader();
    lease.fenced(at_ms(500), 6); // an older term's write: not ours
    assert_eq!(lease.writable_epoch(at_ms(500)), Some(7));
    lease.fenced(at_ms(600), 7);
    assert_eq!(lease.writable_epoch(at_ms(600)), None);
    assert_eq!(
        events(&mut lease),
        [LeaseEvent::SteppedDown {
            epoch: 7,
            reason: StepDown::Fenced
        }]
    );
}

#[test]
fn a_grant_that_arrives_too_late_is_not_acted_on() {
    let mut lease = Lease::new(at_ms(0), config());
    let request = lease.poll_request(at_ms(0)).expect("an acquire");
    // Paused for 5 s: by the time the answer is read, the grant may be over.
    lease.granted(at_ms(5_000), request.id(), 3);
    assert_eq!(lease.role(), Role::Standby);
    assert_eq!(events(&mut lease), []);
    assert!(
        lease.poll_request(at_ms(5_000)).is_some(),
        "asks again at once"
    );
}

#[test]
fn answers_to_other_requests_change_nothing() {
    let mut lease = Lease::new(at_ms(0), config());
    let request = lease.poll_request(at_ms(0)).expect("an acquire");
    let stale = taskforge_core::lease::RequestId(request.id().0 + 10);
    lease.granted(at_ms(10), stale, 3);
    assert_eq!(lease.role(), Role::Standby);
    assert_eq!(
        lease.poll_request(at_ms(20)),
        None,
        "still waiting for its answer"
    );
}
