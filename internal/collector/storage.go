package collector

import (
	"context"
	"time"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// Storage is what the collector's handlers keep records in: the embedded
// store (internal/store, one replica on one volume) or PostgreSQL
// (internal/pgstore, replicas over one database). Both give the same
// answers: a nil error from Submit means durable, every id is counted once,
// and a request that reuses an id for another payload stores nothing
// (*store.ConflictError).
//
// What only the embedded store has (a read-only reopen on a full volume,
// the volume's metrics, a compaction after an erasure, the survey engine's
// Pebble database) stays on *store.Store, which Server keeps apart
// (Server.store).
type Storage interface {
	// Submit stores records durably; see store.Store.Submit for the
	// answers. pgstore adds errors that are pgstore.ErrUnavailable when the
	// database cannot take them (503 with Retry-After).
	Submit(ctx context.Context, records []store.Record) (store.Result, error)
	// Export calls fn with the JSON of every stored record of one subject,
	// in the order stored.
	Export(ctx context.Context, kind rollup.Kind, subject string, fn func(json []byte) error) error
	// Has reports whether a record of subject with this id is stored.
	Has(ctx context.Context, kind rollup.Kind, subject, id string) (bool, error)
	// PruneExpired deletes records before cutoff and counts those kept.
	PruneExpired(ctx context.Context, cutoff, recentSince time.Time) (store.RecordsPruned, error)
	// PruneContacts drops the contacts stored with interactions before
	// cutoff (now less contactRetention) and counts them.
	PruneContacts(ctx context.Context, cutoff time.Time) (int, error)

	// TouchpointWindow, SurveyWindow and Names are what summaries and
	// exports read of the rollups, as rollup.Set answers them.
	TouchpointWindow(ctx context.Context, names []string, window time.Duration, end, now time.Time) (*rollup.Touchpoint, rollup.Window, error)
	SurveyWindow(ctx context.Context, name string, window time.Duration, end, now time.Time) (*rollup.Survey, rollup.Window, error)
	Names(ctx context.Context) (touchpoints, surveys []string, err error)

	// Err is why records cannot be written now (nil when they can).
	Err() error
	// Failed is an error only a restart repairs (liveness fails on it).
	Failed() error
	// ReadOnly is why the store only reads (ready, refusing writes).
	ReadOnly() error
	// Ping is nil while the storage answers; otherwise why not, for the
	// readiness probe.
	Ping(ctx context.Context) error
	// DiskBytes is the bytes the storage takes on the collector's volume,
	// when it keeps its data there.
	DiskBytes() (uint64, bool)

	// The raw records are one holder of customer data, and the storage
	// keeps the audit log of erasures.
	customerdata.Holder
	customerdata.AuditLog
	// PruneErasures deletes the audit log's entries before cutoff.
	PruneErasures(cutoff time.Time) error

	Close() error
}

// embedded is the embedded store as a Storage: the store's own methods,
// with the context the interface passes and the rollups read in memory.
type embedded struct{ *store.Store }

var _ Storage = embedded{}

func (e embedded) Export(_ context.Context, kind rollup.Kind, subject string, fn func([]byte) error) error {
	return e.Store.Export(kind, subject, fn)
}

func (e embedded) Has(_ context.Context, kind rollup.Kind, subject, id string) (bool, error) {
	return e.Store.Has(kind, subject, id)
}

func (e embedded) PruneExpired(_ context.Context, cutoff, recentSince time.Time) (store.RecordsPruned, error) {
	return e.Store.PruneExpired(cutoff, recentSince)
}

func (e embedded) PruneContacts(_ context.Context, cutoff time.Time) (int, error) {
	return e.Store.PruneContacts(cutoff)
}

func (e embedded) TouchpointWindow(_ context.Context, names []string, window time.Duration, end, now time.Time) (*rollup.Touchpoint, rollup.Window, error) {
	return e.Rollups().TouchpointWindow(names, window, end, now)
}

func (e embedded) SurveyWindow(_ context.Context, name string, window time.Duration, end, now time.Time) (*rollup.Survey, rollup.Window, error) {
	return e.Rollups().SurveyWindow(name, window, end, now)
}

func (e embedded) Names(context.Context) ([]string, []string, error) {
	tps, svs := e.Rollups().Names()
	return tps, svs, nil
}

// Ping: the embedded store answers while it is open; its faults are
// Failed and ReadOnly.
func (e embedded) Ping(context.Context) error { return nil }

// storage returns the storage the handlers use now: the database when the
// collector runs on PostgreSQL, else the embedded store (nil while it
// opens or reopens).
func (s *Server) storage() Storage {
	if p := s.external.Load(); p != nil {
		return *p
	}
	if st := s.store.Load(); st != nil {
		return embedded{st}
	}
	return nil
}
