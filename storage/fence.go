package storage

import (
	"fmt"
	"time"
)

// Fence is the lease check of every write made under a lease (Heartbeat, SaveSteps,
// FinishRun, Release, SpawnBatch), shared by the backends so that they refuse alike and say
// why in the same words. cur is the workflow row as the write's own statement or transaction
// reads (and locks) it; only its ID, State, LeaseOwner, LeaseToken and LeaseUntil are used.
// storeNow is the store's clock, read in that same statement or transaction, never a time
// the caller passed.
//
// It returns nil when l is cur's current lease and live: cur is running, its token is
// l.Token and storeNow is before its LeaseUntil. Otherwise it returns an error wrapping
// ErrCancelled (cur was cancelled) or ErrLeaseLost, whose message names the reason: the
// lease was superseded (naming the current holder and token), released, or expired (with
// both times, by the store's clock).
func Fence(l Lease, cur Workflow, storeNow time.Time) error {
	if !fencing && cur.State != StateCancelled {
		return nil
	}
	mine := fmt.Sprintf("%q (token %d)", l.Owner, l.Token)
	switch {
	case cur.State == StateCancelled:
		return fmt.Errorf("%w: workflow %d was cancelled; the lease of %s can write nothing more", ErrCancelled, cur.ID, mine)
	case cur.LeaseToken > l.Token:
		holder := fmt.Sprintf("%q (token %d)", cur.LeaseOwner, cur.LeaseToken)
		switch {
		case cur.State != StateRunning:
			return fmt.Errorf("%w: workflow %d was taken over by %s and is now %s; the lease of %s was superseded", ErrLeaseLost, cur.ID, holder, cur.State, mine)
		case !storeNow.Before(cur.LeaseUntil):
			return fmt.Errorf("%w: workflow %d was taken over by %s, whose lease has expired too; the lease of %s was superseded", ErrLeaseLost, cur.ID, holder, mine)
		}
		return fmt.Errorf("%w: workflow %d is now leased by %s; the lease of %s was superseded", ErrLeaseLost, cur.ID, holder, mine)
	case cur.LeaseToken < l.Token:
		return fmt.Errorf("%w: workflow %d never had lease token %d; the latest is %d, of %q", ErrLeaseLost, cur.ID, l.Token, cur.LeaseToken, cur.LeaseOwner)
	case cur.State != StateRunning:
		return fmt.Errorf("%w: workflow %d: the lease of %s was released and the workflow is %s (%w)", ErrLeaseLost, cur.ID, mine, cur.State, ErrLeaseReleased)
	case !storeNow.Before(cur.LeaseUntil):
		return fmt.Errorf("%w: workflow %d: the lease of %s expired at %s by the store's clock, which reads %s", ErrLeaseLost, cur.ID, mine,
			cur.LeaseUntil.UTC().Format(time.RFC3339Nano), storeNow.UTC().Format(time.RFC3339Nano))
	}
	return nil
}
