package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func withFingerprint(r Record, fp uint64) Record {
	r.Fingerprint = fp
	return r
}

// An id reused for another payload refuses the whole request and stores
// nothing of it; the stored record stands, before and after a restart.
func TestReusedIDWithAnotherPayloadIsAConflict(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	at := now.Add(-time.Hour)
	if res, err := s.Submit(ctx, []Record{withFingerprint(event("a", at, 30), 1)}); err != nil || res.Accepted != 1 {
		t.Fatalf("first: %+v %v", res, err)
	}
	check := func(s *Store) {
		t.Helper()
		res, err := s.Submit(ctx, []Record{withFingerprint(event("b", at, 10), 2), withFingerprint(event("a", at, 99), 9)})
		var conflict *ConflictError
		if !errors.As(err, &conflict) || !errors.Is(err, ErrConflict) || conflict.Index != 1 || conflict.ID != "a" {
			t.Fatalf("reuse of a: %+v %v, want a conflict naming record 1, id a", res, err)
		}
		if has, err := s.Has(event("b", at, 10).Kind, "chat", "b"); err != nil || has {
			t.Errorf("b of the refused request stored: %v %v", has, err)
		}
		if n, _, _ := counts(t, s); n != 1 {
			t.Errorf("%d interactions counted, want 1", n)
		}
		// The same payload again is a plain duplicate; an unknown
		// fingerprint (0) never conflicts.
		for _, fp := range []uint64{1, 0} {
			res, err = s.Submit(ctx, []Record{withFingerprint(event("a", at, 30), fp)})
			if err != nil || res.Duplicates != 1 || res.Accepted != 0 {
				t.Errorf("retry of a with fingerprint %d: %+v %v, want a duplicate", fp, res, err)
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	check(s)

	// An id stored without a fingerprint (as before they were kept) is a
	// duplicate whatever the retry's fingerprint.
	if _, err := s.Submit(ctx, []Record{event("old", at, 5)}); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Submit(ctx, []Record{withFingerprint(event("old", at, 6), 77)}); err != nil || res.Duplicates != 1 {
		t.Errorf("id without a fingerprint: %+v %v, want a duplicate", res, err)
	}
	// Two records of one request with one id: a duplicate when equal, a
	// conflict (storing neither) when not.
	res, err := s.Submit(ctx, []Record{withFingerprint(event("c", at, 5), 3), withFingerprint(event("c", at, 5), 3)})
	if err != nil || res.Accepted != 1 || res.Duplicates != 1 {
		t.Errorf("c twice, same payload: %+v %v", res, err)
	}
	_, err = s.Submit(ctx, []Record{withFingerprint(event("d", at, 5), 4), withFingerprint(event("d", at, 6), 5)})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("d twice, different payloads: %v, want a conflict", err)
	}
	if has, _ := s.Has(event("d", at, 5).Kind, "chat", "d"); has {
		t.Error("d stored although its request was refused")
	}
}

// Requests racing with one new id: exactly one stores it; every other is
// a duplicate (same payload) or a conflict (another payload), whether they
// land in one group commit or in several.
func TestConcurrentRequestsWithOneID(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	at := now.Add(-time.Hour)
	for round := range 20 {
		id := "race-" + string(rune('a'+round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		accepted, duplicates, conflicts := 0, 0, 0
		var winner uint64
		for i := range 16 {
			fp := uint64(1 + i%2) // two payloads
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Each request also carries a record of its own, which
				// must be stored only if the request is.
				own := withFingerprint(event(id+"-own-"+string(rune('a'+i)), at, 1), 1)
				res, err := s.Submit(ctx, []Record{own, withFingerprint(event(id, at, float64(fp)), fp)})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, ErrConflict):
					conflicts++
					if has, _ := s.Has(own.Kind, "chat", own.ID); has {
						t.Errorf("%s stored although its request was refused", own.ID)
					}
				case err != nil:
					t.Error(err)
				case res.Duplicates == 1 && res.Accepted == 1:
					duplicates++
				case res.Accepted == 2:
					accepted++
					winner = fp
				default:
					t.Errorf("unexpected result %+v", res)
				}
			}()
		}
		wg.Wait()
		if accepted != 1 || duplicates != 7 || conflicts != 8 {
			t.Errorf("%s: %d stored, %d duplicates, %d conflicts; want 1, 7, 8 (winner payload %d)", id, accepted, duplicates, conflicts, winner)
		}
	}
}
