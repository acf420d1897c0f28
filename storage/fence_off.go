//go:build chronoforge_nofencing

package storage

// fencing is off in this deliberately broken build: Fence accepts every write to a workflow that
// is not cancelled, whoever holds its lease and whatever its state. The chaos suite runs itself on this build to prove that
// it fails when fencing is gone (internal/chaos TestBrokenFencingIsCaught).
const fencing = false
