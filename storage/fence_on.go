//go:build !chronoforge_nofencing

package storage

// fencing is whether Fence refuses writes under a lease that is not the workflow's current,
// live one. It is off only in the deliberately broken build the chaos suite must fail (go
// test -tags chronoforge_nofencing; see internal/chaos).
const fencing = true
