// Package controller is the fibmesh control plane's core loop: it takes
// Updates from a config store (a directory of YAML, or the Kubernetes
// API), builds the next version of the model from every good snapshot,
// keeps the last good input and model in force when an update is
// rejected, runs analyze on what it was given, and serves all of that on
// its debug endpoint. Package xds pushes each model to the agents.
package controller

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/fibmesh/fibmesh/controller/analyze"
	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/store"
)

// Event is what happened with one store update, for the caller's log.
type Event struct {
	Version   uint64 // model version in force after the update
	Rejected  error  // non-nil: the update was rejected, the last good input stays
	Resources int    // resources in force
	Findings  int    // analyze findings on the update
	Errors    int    // of which level Error
	// Change is what the new model changed (nil when rejected).
	Change *model.Change
}

// Controller holds the input in force.
type Controller struct {
	opts    model.Options
	onEvent func(Event)

	mu       sync.RWMutex
	snapshot *config.Snapshot // last good input
	model    *model.Model     // built from snapshot
	findings []analyze.Finding
	rejected error
	updated  time.Time
	checks   []readyCheck
}

type readyCheck struct {
	name  string
	check func() error
}

// AddReadyCheck makes /readyz also require check to pass (nil); name
// appears in the 503's body. Call it before serving Handler.
func (c *Controller) AddReadyCheck(name string, check func() error) {
	c.mu.Lock()
	c.checks = append(c.checks, readyCheck{name, check})
	c.mu.Unlock()
}

// New returns a Controller. onEvent, if not nil, is called after each
// update (from Run's goroutine).
func New(opts model.Options, onEvent func(Event)) *Controller {
	return &Controller{opts: opts, onEvent: onEvent}
}

// Run consumes st's updates until ctx is done or the store fails.
func (c *Controller) Run(ctx context.Context, st store.Store) error {
	errc := make(chan error, 1)
	go func() { errc <- st.Run(ctx) }()
	for {
		select {
		case u, ok := <-st.Updates():
			if !ok {
				return <-errc
			}
			c.Apply(u)
		case err := <-errc:
			return err
		}
	}
}

// Apply takes one store update: a good snapshot becomes the input in
// force (a new version); a rejected one leaves the last good input in
// force, and its decode errors become IST0106 findings next to the
// analysis of that last good input.
func (c *Controller) Apply(u store.Update) {
	var ev Event
	var findings []analyze.Finding
	if u.Err != nil {
		findings = analyze.FromDecodeErrors(u.Err)
		if len(findings) == 0 {
			findings = []analyze.Finding{{Code: analyze.SchemaValidationError.ID, Level: analyze.Error, Message: u.Err.Error()}}
		}
		if u.Snapshot != nil {
			findings = append(findings, analyze.Analyze(u.Snapshot)...)
		}
		ev.Rejected = u.Err
	} else if u.Snapshot != nil {
		findings = analyze.Analyze(u.Snapshot)
		// Only Run's goroutine writes c.model: reading it here
		// without the lock is safe.
		m, err := model.Build(u.Snapshot, c.model, c.opts)
		if err != nil {
			ev.Rejected = err
		} else {
			c.mu.Lock()
			c.snapshot, c.model = u.Snapshot, m
			c.mu.Unlock()
			ch := m.Change
			ev.Change = &ch
		}
	}
	c.mu.Lock()
	c.findings = findings
	c.rejected = ev.Rejected
	c.updated = time.Now()
	if c.model != nil {
		ev.Version = c.model.Version
	}
	if c.snapshot != nil {
		ev.Resources = len(c.snapshot.Resources)
	}
	c.mu.Unlock()
	ev.Findings = len(findings)
	for _, f := range findings {
		if f.Level == analyze.Error {
			ev.Errors++
		}
	}
	if c.onEvent != nil {
		c.onEvent(ev)
	}
}

// Model returns the model in force (nil before the first good update).
func (c *Controller) Model() *model.Model {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.model
}

// Snapshot returns the input in force (nil before the first good update).
func (c *Controller) Snapshot() *config.Snapshot {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.snapshot
}

// Findings returns analyze's findings on the latest update.
func (c *Controller) Findings() []analyze.Finding {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.findings
}

// Handler serves the debug endpoint:
//
//	/debug/analyze  findings on the latest input (JSON; ?o=table|yaml)
//	/debug/resources the resources in force (JSON)
//	/debug/model    the model in force (JSON)
//	/debug/status   version, last update time, rejection if any
//	/healthz        200 while the process runs
//	/readyz         200 once an input is in force and every AddReadyCheck passes
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/analyze", func(w http.ResponseWriter, r *http.Request) {
		format := r.URL.Query().Get("o")
		if format == "" {
			format = "json"
		}
		if err := analyze.Write(w, format, c.Findings()); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("GET /debug/resources", func(w http.ResponseWriter, r *http.Request) {
		snap := c.Snapshot()
		if snap == nil {
			http.Error(w, "no input yet: the store has not delivered a good snapshot", http.StatusServiceUnavailable)
			return
		}
		type row struct {
			APIVersion string        `json:"apiVersion"`
			Kind       string        `json:"kind"`
			Namespace  string        `json:"namespace,omitempty"`
			Name       string        `json:"name"`
			Source     config.Source `json:"source"`
		}
		rows := make([]row, 0, len(snap.Resources))
		for _, res := range snap.Resources {
			rows = append(rows, row{res.GVK.GroupVersion().String(), res.GVK.Kind, res.Namespace, res.Name, res.Source})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rows)
	})
	mux.HandleFunc("GET /debug/model", func(w http.ResponseWriter, r *http.Request) {
		m := c.Model()
		if m == nil {
			http.Error(w, "no model yet: the store has not delivered a good snapshot", http.StatusServiceUnavailable)
			return
		}
		b, err := m.Dump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	mux.HandleFunc("GET /debug/status", func(w http.ResponseWriter, r *http.Request) {
		c.mu.RLock()
		st := struct {
			Version  uint64    `json:"version"`
			Updated  time.Time `json:"updated"`
			Rejected string    `json:"rejected,omitempty"`
			Findings int       `json:"findings"`
		}{Updated: c.updated, Findings: len(c.findings)}
		if c.model != nil {
			st.Version = c.model.Version
		}
		if c.rejected != nil {
			st.Rejected = c.rejected.Error()
		}
		c.mu.RUnlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if c.Snapshot() == nil {
			http.Error(w, "not ready: no good input yet", http.StatusServiceUnavailable)
			return
		}
		c.mu.RLock()
		checks := c.checks
		c.mu.RUnlock()
		for _, rc := range checks {
			if err := rc.check(); err != nil {
				http.Error(w, "not ready: "+rc.name+": "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}
