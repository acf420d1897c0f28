package storagetest

import (
	"fmt"
	"slices"
	"testing"
)

// Capability names an optional interface of package storage that a store may implement.
// The cases of a capability run only when the store implements its interface and the
// backend has not declared it missing with Without; otherwise each of them is reported as
// skipped under its own name, with a message naming the capability.
type Capability string

// Notifier is storage.Notifier: wake-ups pushed to the workers of every process (Postgres
// LISTEN/NOTIFY). Its cases are the Notify* cases.
const Notifier Capability = "Notifier"

// knownCapabilities lists every capability the suite has cases for, for checking Without.
func knownCapabilities() []Capability {
	return []Capability{Notifier, GroupFinisher, Inspector, FlowControl}
}

// Option adjusts how Run exercises a backend.
type Option func(*options)

// Without declares capabilities the backend lacks, so Run skips their cases by name even when
// the store implements the interface: a deployment that cannot deliver it (Postgres behind a
// pooler in transaction mode cannot LISTEN; a Postgres-protocol database may have no
// LISTEN/NOTIFY). A store that does not implement an interface needs no declaration: its
// cases skip by themselves. Run fails the test on a name it does not know, so a typo cannot
// silently skip cases.
func Without(caps ...Capability) Option {
	return func(o *options) { o.without = append(o.without, caps...) }
}

// FlowFanOutSize sets how many children the e2e case FlowFanOut spawns (default 10,000): a
// backend that runs the suite a second time over another configuration (a protocol, an
// isolation level) can prove the fan-out at full size once and save the time the second
// time.
func FlowFanOutSize(n int) Option {
	return func(o *options) { o.flowFanOut = n }
}

// options is what the Options given to Run add up to.
type options struct {
	// without are the capabilities the backend declared missing.
	without []Capability
	// flowFanOut is the size of the FlowFanOut case (0: flowFanOut).
	flowFanOut int
}

// newOptions applies opts and checks them.
func newOptions(opts []Option) (options, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.flowFanOut < 0 {
		return o, fmt.Errorf("storagetest: FlowFanOutSize(%d): negative", o.flowFanOut)
	}
	if o.flowFanOut == 0 {
		o.flowFanOut = flowFanOut
	}
	for _, c := range o.without {
		if !slices.Contains(knownCapabilities(), c) {
			return o, fmt.Errorf("storagetest: Without(%q): unknown capability; the suite knows %q", c, knownCapabilities())
		}
	}
	return o, nil
}

// capabilityCase is a storage case that needs an optional interface.
type capabilityCase struct {
	storageCase
	needs Capability
}

// capabilityCases lists the cases of optional interfaces in the order they are reported.
func capabilityCases() []capabilityCase {
	return []capabilityCase{
		{storageCase{"NotifyCreate", testNotifyCreate}, Notifier},
		{storageCase{"NotifyWake", testNotifyWake}, Notifier},
		{storageCase{"NotifyRetry", testNotifyRetry}, Notifier},
		{storageCase{"NotifyRelease", testNotifyRelease}, Notifier},
		{storageCase{"NotifyCoalesced", testNotifyCoalesced}, Notifier},
		{storageCase{"NotifyListeners", testNotifyListeners}, Notifier},
		{storageCase{"NotifyCreateBatch", testNotifyCreateBatch}, Notifier},
		{storageCase{"NotifySendMessage", testNotifySendMessage}, Notifier},
		{storageCase{"GroupFinishEach", testGroupFinishEach}, GroupFinisher},
		{storageCase{"GroupFinishKeptWake", testGroupFinishKeptWake}, GroupFinisher},
		{storageCase{"GroupFinishDuplicate", testGroupFinishDuplicate}, GroupFinisher},
		{storageCase{"GroupFinishClosed", testGroupFinishClosed}, GroupFinisher},
		{storageCase{"InspectCountStates", testInspectCountStates}, Inspector},
		{storageCase{"InspectBranchCounts", testInspectBranchCounts}, Inspector},
		{storageCase{"InspectBacklog", testInspectBacklog}, Inspector},
		{storageCase{"FlowStored", testFlowStored}, FlowControl},
		{storageCase{"FlowConcurrency", testFlowConcurrency}, FlowControl},
		{storageCase{"FlowLeaseExpiry", testFlowLeaseExpiry}, FlowControl},
		{storageCase{"FlowRate", testFlowRate}, FlowControl},
		{storageCase{"FlowSkewedClocks", testFlowSkewedClocks}, FlowControl},
		{storageCase{"FlowPriority", testFlowPriority}, FlowControl},
		{storageCase{"FlowNoHeadOfLine", testFlowNoHeadOfLine}, FlowControl},
		{storageCase{"FlowList", testFlowList}, FlowControl},
		{storageCase{"FlowSpawn", testFlowSpawn}, FlowControl},
		{storageCase{"FlowConcurrentClaimers", testFlowConcurrentClaimers}, FlowControl},
	}
}

// runCapabilityCases runs the capability cases as parallel subtests of t, skipping by name
// those of a capability the backend declared missing.
func runCapabilityCases(t *testing.T, factory Factory, o options) {
	for _, c := range capabilityCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if slices.Contains(o.without, c.needs) {
				t.Skipf("capability %s: the backend declared it missing (storagetest.Without)", c.needs)
			}
			c.run(t, factory)
		})
	}
}
