package dispatch

import (
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Defaults of the options.
const (
	DefaultConcurrency       = 8
	DefaultLeaseTTL          = 30 * time.Second
	DefaultPollMin           = 50 * time.Millisecond
	DefaultPollMax           = time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultUnknownCheckEvery = time.Minute
	DefaultClaimWindow       = 2 * time.Millisecond
	DefaultMergeWakeEvery    = 200 * time.Millisecond
)

// config is what the options set.
type config struct {
	concurrency     int
	batch           int
	ttl             time.Duration
	heartbeat       time.Duration
	pollMin         time.Duration
	pollMax         time.Duration
	shutdownTimeout time.Duration
	owner           string
	unknownEvery    time.Duration
	claimWindow     time.Duration
	mergeWakeEvery  time.Duration
	// prefetch is how many claimed workflows may wait for a slot.
	prefetch int
}

// Option configures a Worker. An invalid option makes New return an error wrapping
// storage.ErrInvalid that names the option.
type Option func(*config) error

func invalid(option string, format string, args ...any) error {
	return fmt.Errorf("%w: dispatch: option %s: %s", storage.ErrInvalid, option, fmt.Sprintf(format, args...))
}

// Concurrency sets the most workflows the worker runs at once (default 8, at least 1; plus
// Prefetch, at most math.MaxInt).
func Concurrency(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("Concurrency", "%d must be at least 1", n)
		}
		c.concurrency = n
		return nil
	}
}

// BatchSize sets the most workflows one claim takes (default: the concurrency, capped at
// storage.MaxClaim). A claim never takes more than the worker's free slots.
func BatchSize(n int) Option {
	return func(c *config) error {
		if n < 1 || n > storage.MaxClaim {
			return invalid("BatchSize", "%d must be 1..%d", n, storage.MaxClaim)
		}
		c.batch = n
		return nil
	}
}

// Prefetch sets how many workflows the worker claims ahead of its free slots (default 0:
// none). A claimed workflow waits for a slot with its lease kept alive by heartbeats, starts
// the moment a run ends instead of after the next claim's round trip, and is given back at
// once (Release) when the worker stops; the claims that refill the queue overlap the runs.
// It pays on the SQL backends for short runs such as fan-out children (Postgres 10,000
// one-step children: 1,590 -> 2,000 children/s, MariaDB 1,320 -> 1,740), and costs on bbolt,
// where a claim is a write that competes with starts (2,000 three-step workflows started one
// by one: 1,030 -> 590 workflows/s); see BENCHMARKS.md. A worker holds at most Concurrency +
// Prefetch leases.
func Prefetch(n int) Option {
	return func(c *config) error {
		if n < 0 || n > storage.MaxClaim {
			return invalid("Prefetch", "%d must be 0..%d", n, storage.MaxClaim)
		}
		c.prefetch = n
		return nil
	}
}

// LeaseTTL sets how long a claim or heartbeat holds a workflow (default 30s, at most
// storage.MaxLeaseTTL), by the store's clock: real time, whatever clock the engine has. A
// worker that dies lets its workflows go once this has passed since its last heartbeat.
func LeaseTTL(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 || d > storage.MaxLeaseTTL {
			return invalid("LeaseTTL", "%v must be positive and at most %v", d, storage.MaxLeaseTTL)
		}
		c.ttl = d
		return nil
	}
}

// HeartbeatEvery sets how often (real time, like the lease TTL) a running workflow's lease is
// extended (default LeaseTTL/3). It must be shorter than the lease TTL.
func HeartbeatEvery(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("HeartbeatEvery", "%v must be positive", d)
		}
		c.heartbeat = d
		return nil
	}
}

// PollInterval sets the idle backoff between claims that find nothing: it starts at min,
// doubles while the worker stays idle up to max, and returns to min when work is found
// (default 50ms..1s). Work started in the same process wakes the worker at once.
func PollInterval(min, max time.Duration) Option {
	return func(c *config) error {
		if min <= 0 || max < min {
			return invalid("PollInterval", "(%v, %v) needs 0 < min <= max", min, max)
		}
		c.pollMin, c.pollMax = min, max
		return nil
	}
}

// ShutdownTimeout sets how long (real time) Run waits for runs in flight once its context is
// done before it cancels them with cause sdk.ErrShutdown (default 30s; 0 cancels them at
// once).
func ShutdownTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return invalid("ShutdownTimeout", "%v must not be negative", d)
		}
		c.shutdownTimeout = d
		return nil
	}
}

// Owner sets the lease owner recorded on claimed workflows (default hostname-pid-random).
// It must be 1..storage.MaxOwnerLen bytes and should be unique per worker.
func Owner(name string) Option {
	return func(c *config) error {
		if name == "" || len(name) > storage.MaxOwnerLen {
			return invalid("Owner", "%q must be 1..%d bytes", name, storage.MaxOwnerLen)
		}
		c.owner = name
		return nil
	}
}

// UnknownCheckEvery sets how often the worker looks for due workflows whose names its engine
// does not know, to report them (default 1 minute; also once when Run starts).
func UnknownCheckEvery(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("UnknownCheckEvery", "%v must be positive", d)
		}
		c.unknownEvery = d
		return nil
	}
}

// defaults returns the configuration before options; batch and heartbeat are derived later
// from the concurrency and TTL the options chose.
// ClaimWindow sets how long the worker waits for more slots to free before claiming, while
// fewer than half are free and runs are in flight (default 2 ms, real time; 0 claims at
// once). One claim then fills several slots, which matters on server databases where every
// claim is a round trip and a commit.
func ClaimWindow(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return invalid("ClaimWindow", "%v must not be negative", d)
		}
		c.claimWindow = d
		return nil
	}
}

// MergeWakeEvery sets how often, at most, the worker wakes the parents of branches whose
// children it finished (default 200 ms, real time). When a child run ends, the worker adds
// the child's branch to a set; a goroutine of Run flushes the set right away when it was
// idle, then at most once per d while children keep ending, with one storage call for all
// the branches (see sdk.Engine.WakeMerges). So a parent resumes within about d of its last
// child, instead of at its next merge probe, at any number of children.
func MergeWakeEvery(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("MergeWakeEvery", "%v must be positive", d)
		}
		c.mergeWakeEvery = d
		return nil
	}
}

func defaults() config {
	return config{
		concurrency:     DefaultConcurrency,
		ttl:             DefaultLeaseTTL,
		pollMin:         DefaultPollMin,
		pollMax:         DefaultPollMax,
		shutdownTimeout: DefaultShutdownTimeout,
		unknownEvery:    DefaultUnknownCheckEvery,
		claimWindow:     DefaultClaimWindow,
		mergeWakeEvery:  DefaultMergeWakeEvery,
	}
}

// resolve derives the unset dependent values and checks the options against each other.
func (c *config) resolve() error {
	// A worker holds up to Concurrency + Prefetch workflows and sizes a channel by the sum.
	if c.concurrency > math.MaxInt-c.prefetch {
		return invalid("Concurrency", "%d plus Prefetch %d is more workflows than a worker can hold", c.concurrency, c.prefetch)
	}
	if c.batch == 0 {
		c.batch = min(c.concurrency, storage.MaxClaim)
	}
	if c.heartbeat == 0 {
		c.heartbeat = c.ttl / 3
		if c.heartbeat <= 0 {
			return invalid("LeaseTTL", "%v is too short to heartbeat within", c.ttl)
		}
	}
	if c.heartbeat >= c.ttl {
		return invalid("HeartbeatEvery", "%v must be shorter than the lease TTL %v", c.heartbeat, c.ttl)
	}
	if c.owner == "" {
		c.owner = defaultOwner()
	}
	return nil
}

// defaultOwner returns hostname-pid-random, short enough for a lease owner.
func defaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	var r [4]byte
	for i := range r {
		r[i] = byte(rand.Uint32())
	}
	suffix := "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(r[:])
	return storage.Truncate(host, storage.MaxOwnerLen-len(suffix)) + suffix
}
