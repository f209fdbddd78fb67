package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// Member is one customer of a wave's audience.
type Member struct {
	Customer string   `json:"customer"`
	Contact  *Contact `json:"contact,omitempty"`
}

// MaxWaveMembers caps one Wave call; a larger audience is sent in parts,
// each with its own id.
const MaxWaveMembers = 10_000

// ErrUnknownSurvey is returned by Wave for a survey not in the config.
var ErrUnknownSurvey = errors.New("unknown survey")

// Wave makes every member of an audience eligible for survey now, under
// the same sampling, contact budget and suspension as an interaction. id
// names the wave (or the part of one): a wave already taken is not taken
// again, so a retried job invites no one twice. It reports whether the
// wave was new.
func (e *Engine) Wave(survey, id string, members []Member) (bool, error) {
	if len(members) > MaxWaveMembers {
		return false, fmt.Errorf("%d members in one wave, at most %d", len(members), MaxWaveMembers)
	}
	if err := e.lockWait(context.Background()); err != nil {
		return false, err
	}
	defer e.unlock()
	if e.cfg.Load().byName[survey] == nil {
		return false, ErrUnknownSurvey
	}
	marker := []byte(prefixWave + survey + "\x00" + id)
	if _, err := e.kv.Get(marker); err == nil {
		return false, nil
	} else if !errors.Is(err, kv.ErrNotFound) {
		return false, err
	}
	now := e.now()
	w := e.newBatch()
	defer w.close()
	for i, m := range members {
		p := pending{Survey: survey, Customer: m.Customer, Contact: m.Contact, EventID: "wave:" + id}
		// The member's index keeps due keys of one wave apart.
		if err := w.setJSON(timeKey(prefixDue, now, binary.BigEndian.AppendUint64(nil, uint64(i)), []byte(survey+"\x00wave\x00"+id)), p); err != nil {
			return false, err
		}
	}
	_ = w.b.Set(marker, binary.BigEndian.AppendUint64(nil, uint64(now.Unix())))
	w.count(survey, CounterWaveMembers, now)
	if err := w.commit(); err != nil {
		return false, err
	}
	e.Notify()
	return true, nil
}
