package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// maxErrors is how many error records show prints.
const maxErrors = 100

// stepRow is one step record in show's output.
type stepRow struct {
	ID          int64             `json:"id"`
	Name        string            `json:"name"`
	State       storage.StepState `json:"state"`
	Attempts    int               `json:"attempts"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
	CompletedAt *time.Time        `json:"completed_at,omitempty"`
	LastError   string            `json:"last_error,omitempty"`
	Result      json.RawMessage   `json:"result,omitempty"`
}

// errorRow is one error record in show's output.
type errorRow struct {
	Step      string    `json:"step,omitempty"`
	Attempt   int       `json:"attempt"`
	Type      string    `json:"type"`
	Message   string    `json:"message"`
	CreatedAt time.Time `json:"created_at"`
}

// showResult is the output of show.
type showResult struct {
	workflowRow
	LeaseOwner string          `json:"lease_owner,omitempty"`
	LeaseUntil *time.Time      `json:"lease_until,omitempty"`
	LeaseToken int64           `json:"lease_token"`
	TraceID    string          `json:"trace_id,omitempty"`
	Steps      []stepRow       `json:"steps"`
	Errors     []errorRow      `json:"errors"`
	Values     json.RawMessage `json:"values,omitempty"`
	Input      json.RawMessage `json:"input,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"`
}

// payload returns b as JSON when it is JSON, else as a JSON string.
func payload(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}

// findWorkflow resolves "<id>" or "<name>/<key>".
func (c *cli) findWorkflow(ctx context.Context, ref string) (storage.Workflow, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
		if id <= 0 {
			return storage.Workflow{}, usagef("workflow ID %d: IDs are positive", id)
		}
		w, err := c.store.GetWorkflow(ctx, id)
		if err != nil {
			return w, fmt.Errorf("workflow %d: %w", id, err)
		}
		return w, nil
	}
	name, key, ok := strings.Cut(ref, "/")
	if !ok || name == "" || key == "" {
		return storage.Workflow{}, usagef("%q is neither a workflow ID nor name/key", ref)
	}
	w, err := c.store.FindWorkflow(ctx, name, key)
	if err != nil {
		return w, fmt.Errorf("workflow %q key %q: %w", name, key, err)
	}
	return w, nil
}

// runShow prints one workflow with its steps, error records and values.
func runShow(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	payloads := fs.Bool("payloads", false, "show the input, output and step results")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one workflow: <id> or <name>/<key>")
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	w, err := c.findWorkflow(ctx, pos[0])
	if err != nil {
		return err
	}
	w, steps, err := c.store.Load(ctx, w.ID)
	if err != nil {
		return fmt.Errorf("workflow %d: %w", w.ID, err)
	}
	errs, err := c.store.ListErrors(ctx, w.ID, maxErrors)
	if err != nil {
		return fmt.Errorf("workflow %d: error records: %w", w.ID, err)
	}
	res := showResult{
		workflowRow: row(w), LeaseOwner: w.LeaseOwner, LeaseUntil: optTime(w.LeaseUntil), LeaseToken: w.LeaseToken,
		TraceID: telemetry.TraceID(w.TraceContext), Steps: []stepRow{}, Errors: []errorRow{}, Values: payload(w.Values),
	}
	if *payloads {
		res.Input, res.Output = payload(w.Input), payload(w.Output)
	}
	for _, s := range steps {
		r := stepRow{ID: s.ID, Name: s.Name, State: s.State, Attempts: s.Attempts, CreatedAt: s.CreatedAt,
			UpdatedAt: s.UpdatedAt, CompletedAt: optTime(s.CompletedAt), LastError: s.LastError}
		if *payloads {
			r.Result = payload(s.Result)
		}
		res.Steps = append(res.Steps, r)
	}
	for _, e := range errs {
		res.Errors = append(res.Errors, errorRow{Step: e.Step, Attempt: e.Attempt, Type: e.Type, Message: e.Message, CreatedAt: e.CreatedAt})
	}
	if c.json() {
		return c.emit(res)
	}
	tw := c.table()
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	field("id", strconv.FormatInt(w.ID, 10))
	field("name", w.Name)
	field("key", w.Key)
	field("flow", w.Flow)
	field("state", string(w.State))
	field("attempt", strconv.Itoa(w.Attempt))
	field("run at", fmtTime(w.RunAt))
	if w.Wait.Kind != "" {
		field("wait", string(w.Wait.Kind)+" "+w.Wait.Step)
	}
	switch {
	case w.LeaseOwner != "" && w.LeaseUntil.IsZero():
		field("lease", fmt.Sprintf("%s, released (token %d)", w.LeaseOwner, w.LeaseToken))
	case w.LeaseOwner != "":
		field("lease", fmt.Sprintf("%s until %s (token %d)", w.LeaseOwner, fmtTime(w.LeaseUntil), w.LeaseToken))
	}
	if w.ParentStepID != 0 {
		field("parent step", strconv.FormatInt(w.ParentStepID, 10))
	}
	for _, k := range slices.Sorted(maps.Keys(w.Tags)) {
		field("tag "+k, w.Tags[k])
	}
	field("created", fmtTime(w.CreatedAt))
	field("updated", fmtTime(w.UpdatedAt))
	field("finished", fmtTime(w.FinishedAt))
	field("trace id", res.TraceID)
	field("last error", w.LastError)
	if *payloads {
		field("input", string(res.Input))
		field("output", string(res.Output))
	}
	field("values", string(res.Values))
	_ = tw.Flush()
	fmt.Fprintf(c.stdout, "\nsteps (%d):\n", len(res.Steps))
	tw = c.table()
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tATTEMPTS\tCREATED\tCOMPLETED\tLAST ERROR")
	for _, s := range res.Steps {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Name, s.State, s.Attempts, fmtTime(s.CreatedAt),
			fmtTimePtr(s.CompletedAt), truncate(s.LastError, 60))
		if *payloads && len(s.Result) > 0 {
			fmt.Fprintf(tw, "\t  result: %s\n", truncate(string(s.Result), 200))
		}
	}
	_ = tw.Flush()
	if len(res.Errors) == maxErrors {
		fmt.Fprintf(c.stdout, "\nerrors (the oldest %d):\n", maxErrors)
	} else {
		fmt.Fprintf(c.stdout, "\nerrors (%d):\n", len(res.Errors))
	}
	tw = c.table()
	for _, e := range res.Errors {
		fmt.Fprintf(tw, "%s\t%s\tattempt %d\t%s\t%s\n", fmtTime(e.CreatedAt), e.Step, e.Attempt, e.Type, truncate(e.Message, 100))
	}
	return tw.Flush()
}
