package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// The record codec: a version byte, then the fields in a fixed order as varints and
// length-prefixed bytes. It is compact (payloads are stored as they are, not base64) and
// keeps what JSON would lose: nil versus empty byte slices, and zero versus epoch times.
//
// Versions only add fields, so a build reads every version up to its own and writes its own:
//
//	1  the first format
//	2  workflow records carry Wait.Data after Wait.Step (steps and errors are unchanged)
//	3  workflow records end with their Tags (a count, then key and value pairs in key
//	   order); a record of an earlier version has none. Message records start at 3.
//	4  workflow records end with their Flow key after the tags; a record of an earlier
//	   version has none (""). Flow records (the flows bucket) start at 4.

// codecVersion is the first byte of every record this build writes.
const codecVersion = 4

// errCorrupt marks a record that cannot be decoded; it means the file is damaged or was
// written by an incompatible version.
var errCorrupt = errors.New("bolt: corrupt record")

// record is a stored workflow: the public row plus what only the store needs.
type record struct {
	storage.Workflow
	// Wake is a wake time received while the workflow was running; FinishRun applies it.
	Wake time.Time
}

type encoder struct{ b []byte }

func (e *encoder) int(v int64) { e.b = binary.AppendVarint(e.b, v) }

func (e *encoder) string(s string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}

// bytes writes len+1 so that nil (0) and empty (1) stay apart.
func (e *encoder) bytes(p []byte) {
	if p == nil {
		e.b = binary.AppendUvarint(e.b, 0)
		return
	}
	e.b = binary.AppendUvarint(e.b, uint64(len(p))+1)
	e.b = append(e.b, p...)
}

// time writes a presence byte, then the Unix nanoseconds, so the epoch is not the zero time.
func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.b = append(e.b, 0)
		return
	}
	e.b = append(e.b, 1)
	e.b = binary.AppendVarint(e.b, t.UnixNano())
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) take(n uint64) []byte {
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) string() string { return string(d.take(d.uint())) }

// bytes copies out of the bbolt page, whose memory is only valid inside the transaction.
func (d *decoder) bytes() []byte {
	n := d.uint()
	if n == 0 || d.err != nil {
		return nil
	}
	return append([]byte{}, d.take(n-1)...)
}

func (d *decoder) time() time.Time {
	p := d.take(1)
	if len(p) == 0 || p[0] == 0 {
		return time.Time{}
	}
	return time.Unix(0, d.int()).UTC()
}

// version reads the version byte; a record of a later version than this build's is refused.
func (d *decoder) version(what string) byte {
	p := d.take(1)
	if len(p) == 0 {
		return 0
	}
	if p[0] < 1 || p[0] > codecVersion {
		d.err = fmt.Errorf("%w: %s record has codec version %d, this build reads 1..%d", errCorrupt, what, p[0], codecVersion)
		d.b = nil
	}
	return p[0]
}

func (d *decoder) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorrupt
	}
	if d.err != nil {
		return fmt.Errorf("decode %s: %w", what, d.err)
	}
	return nil
}

func encodeWorkflow(r *record) []byte {
	e := encoder{b: make([]byte, 0, 96+len(r.Name)+len(r.Key)+len(r.Input)+len(r.Output)+len(r.Values)+len(r.Wait.Data)+len(r.TraceContext)+len(r.LastError)+len(r.Flow))}
	e.b = append(e.b, codecVersion)
	e.int(r.ID)
	e.string(r.Name)
	e.string(r.Key)
	e.bytes(r.Input)
	e.bytes(r.Output)
	e.string(string(r.State))
	e.bytes(r.Values)
	e.time(r.RunAt)
	e.string(string(r.Wait.Kind))
	e.string(r.Wait.Step)
	e.bytes(r.Wait.Data)
	e.string(r.LeaseOwner)
	e.time(r.LeaseUntil)
	e.int(r.LeaseToken)
	e.int(int64(r.Attempt))
	e.int(r.ParentStepID)
	e.bytes(r.TraceContext)
	e.string(r.LastError)
	e.time(r.CreatedAt)
	e.time(r.UpdatedAt)
	e.time(r.FinishedAt)
	e.time(r.Wake)
	e.tags(r.Tags)
	e.string(r.Flow)
	return e.b
}

// tags writes the count, then each key and value, in key order so equal tags encode alike.
func (e *encoder) tags(tags map[string]string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(tags)))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		e.string(k)
		e.string(tags[k])
	}
}

// tags reads what encoder.tags wrote; none is nil.
func (d *decoder) tags() map[string]string {
	n := d.uint()
	if n == 0 || d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) { // each tag takes at least two bytes: a corrupt count
		d.fail()
		return nil
	}
	tags := make(map[string]string, n)
	for range n {
		k := d.string()
		tags[k] = d.string()
	}
	return tags
}

func decodeWorkflow(b []byte) (*record, error) {
	d := decoder{b: b}
	v := d.version("workflow")
	r := &record{}
	r.ID = d.int()
	r.Name = d.string()
	r.Key = d.string()
	r.Input = d.bytes()
	r.Output = d.bytes()
	r.State = storage.State(d.string())
	r.Values = d.bytes()
	r.RunAt = d.time()
	r.Wait.Kind = storage.WaitKind(d.string())
	r.Wait.Step = d.string()
	if v >= 2 {
		r.Wait.Data = d.bytes()
	}
	r.LeaseOwner = d.string()
	r.LeaseUntil = d.time()
	r.LeaseToken = d.int()
	r.Attempt = int(d.int())
	r.ParentStepID = d.int()
	r.TraceContext = d.bytes()
	r.LastError = d.string()
	r.CreatedAt = d.time()
	r.UpdatedAt = d.time()
	r.FinishedAt = d.time()
	r.Wake = d.time()
	if v >= 3 {
		r.Tags = d.tags()
	}
	if v >= 4 {
		r.Flow = d.string()
	}
	if err := d.done("workflow"); err != nil {
		return nil, err
	}
	return r, nil
}

func encodeStep(s *storage.Step) []byte {
	e := encoder{b: make([]byte, 0, 64+len(s.Name)+len(s.Result)+len(s.Meta)+len(s.LastError))}
	e.b = append(e.b, codecVersion)
	e.int(s.WorkflowID)
	e.int(s.ID)
	e.string(s.Name)
	e.string(string(s.State))
	e.int(int64(s.Attempts))
	e.bytes(s.Result)
	e.bytes(s.Meta)
	e.string(s.LastError)
	e.time(s.CreatedAt)
	e.time(s.UpdatedAt)
	e.time(s.CompletedAt)
	return e.b
}

func decodeStep(b []byte) (storage.Step, error) {
	d := decoder{b: b}
	d.version("step")
	var s storage.Step
	s.WorkflowID = d.int()
	s.ID = d.int()
	s.Name = d.string()
	s.State = storage.StepState(d.string())
	s.Attempts = int(d.int())
	s.Result = d.bytes()
	s.Meta = d.bytes()
	s.LastError = d.string()
	s.CreatedAt = d.time()
	s.UpdatedAt = d.time()
	s.CompletedAt = d.time()
	return s, d.done("step")
}

func encodeError(r *storage.ErrorRecord) []byte {
	e := encoder{b: make([]byte, 0, 48+len(r.Step)+len(r.Type)+len(r.Message)+len(r.Values))}
	e.b = append(e.b, codecVersion)
	e.int(r.ID)
	e.int(r.WorkflowID)
	e.string(r.Step)
	e.int(int64(r.Attempt))
	e.string(r.Type)
	e.string(r.Message)
	e.bytes(r.Values)
	e.time(r.CreatedAt)
	return e.b
}

func decodeError(b []byte) (storage.ErrorRecord, error) {
	d := decoder{b: b}
	d.version("error")
	var r storage.ErrorRecord
	r.ID = d.int()
	r.WorkflowID = d.int()
	r.Step = d.string()
	r.Attempt = int(d.int())
	r.Type = d.string()
	r.Message = d.string()
	r.Values = d.bytes()
	r.CreatedAt = d.time()
	return r, d.done("error")
}

func encodeMessage(m *storage.Message) []byte {
	e := encoder{b: make([]byte, 0, 48+len(m.Topic)+len(m.Key)+len(m.Payload)+len(m.ConsumedBy))}
	e.b = append(e.b, codecVersion)
	e.int(m.ID)
	e.int(m.WorkflowID)
	e.string(m.Topic)
	e.string(m.Key)
	e.bytes(m.Payload)
	e.time(m.CreatedAt)
	e.string(m.ConsumedBy)
	e.time(m.ConsumedAt)
	return e.b
}

func decodeMessage(b []byte) (storage.Message, error) {
	d := decoder{b: b}
	if v := d.version("message"); d.err == nil && v < 3 {
		d.err = fmt.Errorf("%w: message record has codec version %d; messages start at 3", errCorrupt, v)
	}
	var m storage.Message
	m.ID = d.int()
	m.WorkflowID = d.int()
	m.Topic = d.string()
	m.Key = d.string()
	m.Payload = d.bytes()
	m.CreatedAt = d.time()
	m.ConsumedBy = d.string()
	m.ConsumedAt = d.time()
	return m, d.done("message")
}

// flowRecord is a stored flow (the flows bucket, under its key) with the number of its claims
// in the rate log (the flowlog bucket), which a claim keeps in step with the log so that it
// learns how many claims are in the window without reading them.
type flowRecord struct {
	storage.Flow
	// Logged is the sum of the counts of the key's entries in the flowlog bucket.
	Logged int64
}

// encodeFlow writes a flow record; the key is the bucket key, not repeated here.
func encodeFlow(f *flowRecord) []byte {
	e := encoder{b: make([]byte, 0, 40)}
	e.b = append(e.b, codecVersion)
	e.int(int64(f.Priority))
	e.int(int64(f.Concurrency))
	e.int(int64(f.Rate))
	e.int(int64(f.Per))
	e.time(f.UpdatedAt)
	e.int(f.Logged)
	return e.b
}

// decodeFlow reads a flow record stored under key.
func decodeFlow(key, b []byte) (*flowRecord, error) {
	d := decoder{b: b}
	if v := d.version("flow"); d.err == nil && v < 4 {
		d.err = fmt.Errorf("%w: flow record has codec version %d; flows start at 4", errCorrupt, v)
	}
	f := &flowRecord{Flow: storage.Flow{Key: string(key)}}
	f.Priority = int(d.int())
	f.Concurrency = int(d.int())
	f.Rate = int(d.int())
	f.Per = time.Duration(d.int())
	f.UpdatedAt = d.time()
	f.Logged = d.int()
	if err := d.done("flow"); err != nil {
		return nil, err
	}
	return f, nil
}

// skipBytes passes over what encoder.bytes wrote without copying it.
func (d *decoder) skipBytes() {
	if n := d.uint(); n > 0 {
		d.take(n - 1)
	}
}

// decodeNameState reads only the name and state of a workflow record, leaving its payloads
// unread and uncopied: all CountStates needs of each row. name aliases b, so it is valid only
// inside the transaction.
func decodeNameState(b []byte) (name []byte, state storage.State, err error) {
	d := decoder{b: b}
	d.version("workflow")
	d.int() // id
	name = d.take(d.uint())
	d.take(d.uint()) // key
	d.skipBytes()    // input
	d.skipBytes()    // output
	raw := d.take(d.uint())
	if d.err != nil {
		return nil, "", fmt.Errorf("decode workflow: %w", d.err)
	}
	for _, st := range storage.States {
		if string(raw) == string(st) {
			return name, st, nil
		}
	}
	return nil, "", fmt.Errorf("decode workflow: %w: unknown state %q", errCorrupt, raw)
}
