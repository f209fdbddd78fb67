// Package customerdata names what a storage engine offers so that one
// customer's data can be listed (an access request) and erased (a request
// to erase), and the audit log of erasures. The embedded store and the
// survey engine implement it on Pebble; another engine (PostgreSQL)
// implements the same interfaces.
package customerdata

import (
	"context"
	"encoding/json"
	"time"
)

// Kinds of data kept about a customer, as erasure answers and access
// requests name them (docs/collector.md).
const (
	Events         = "events"         // interaction records (with their contact fields)
	Responses      = "responses"      // survey answers (with their comments)
	DueEntries     = "dueEntries"     // eligibilities waiting for a survey's delay, waves' audience copies
	Invitations    = "invitations"    // invitations with their contact fields
	ContactHistory = "contactHistory" // the last invitation a customer got, for the contact budget
	Outbox         = "outbox"         // messages waiting for delivery
	Parked         = "parked"         // messages with no webhook to go to
	Failed         = "failed"         // messages whose retries ran out
	Detractors     = "detractors"     // detractors' answers sent to the closed loop
	FollowUps      = "followUps"      // when a detractor was followed up
)

// AllKinds lists every kind in the order an erasure reports them.
var AllKinds = []string{Events, Responses, DueEntries, Invitations, ContactHistory, Outbox, Parked, Failed, Detractors, FollowUps}

// Counts is how many items of each kind an erasure removed.
type Counts map[string]int

// Add adds o to c.
func (c Counts) Add(o Counts) {
	for k, n := range o {
		c[k] += n
	}
}

// Total is the sum over every kind.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Holder is one place that keeps data about customers: the raw records,
// the survey engine's state.
type Holder interface {
	// EraseCustomer deletes every item about customer that was stored
	// when it started, durably (synced) before it returns, and reports how
	// many of each kind it deleted. Erasing a customer with nothing stored
	// deletes nothing and is no error. It works in bounded batches, so its
	// memory does not grow with the store.
	EraseCustomer(ctx context.Context, customer string) (Counts, error)
	// ListCustomer calls fn with every item stored about customer, as JSON
	// valid only during the call, in bounded memory.
	ListCustomer(ctx context.Context, customer string, fn func(kind string, item json.RawMessage) error) error
}

// Erasure is one entry of the audit log: no personal data, only when, the
// customer's keyed hash and what was erased.
type Erasure struct {
	Time time.Time `json:"time"`
	// Customer is HMAC-SHA256 of the customer id under a random key kept in
	// the store (lowercase hex): the same customer erased twice has the
	// same hash, and a list of candidate ids (e-mail addresses) cannot be
	// hashed to find it without the key.
	CustomerHash string `json:"customerHash"`
	Erased       Counts `json:"erased"`
}

// AuditLog keeps the erasures done.
type AuditLog interface {
	// CustomerHash is the hash an erasure of customer is logged under.
	CustomerHash(customer string) (string, error)
	// AppendErasure records an erasure durably.
	AppendErasure(e Erasure) error
	// Erasures calls fn with the logged erasures, oldest first, from since
	// on.
	Erasures(since time.Time, fn func(Erasure) error) error
}
