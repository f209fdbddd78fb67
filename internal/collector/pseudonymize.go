package collector

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/cxop-dev/cxop/internal/pseudonym"
)

// Pseudonymous customer ids (pseudonymizeCustomers in the config,
// customerIDKey in the secrets file): every path that takes a customer id
// from outside (events, responses, waves' audiences, an export's customer
// parameter) replaces it with its pseudonym before anything is stored,
// hashed or compared, so that the stored records, invitations, contact
// histories, webhooks and exports carry only pseudonyms, and everything
// keyed by customer works on them unchanged.

// errNoCustomerKey is a config that asks for pseudonyms without a key.
var errNoCustomerKey = errors.New("pseudonymizeCustomers: true needs customerIDKey (base64, at least 32 bytes) in the secrets file, which has none; without it customer ids would be stored in the clear")

// parseCustomerKey reads the secrets file's customer id key field; "" is
// no key. Errors name the field, never the value.
func parseCustomerKey(field, v string) (*pseudonym.Key, error) {
	if v == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("%s: not base64", field)
	}
	k, err := pseudonym.NewKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return k, nil
}

// withCustomerKey is cfg with the secrets' customer key when cfg asks for
// pseudonyms, and without any key when it does not. A config that asks
// for pseudonyms without a key is an error, at start and on reload, so
// that no customer id is ever stored in the clear by mistake.
func withCustomerKey(cfg *settings, sec *secrets) (*settings, error) {
	var key *pseudonym.Key
	if cfg.pseudonymizeCustomers {
		if sec == nil || sec.customerKey == nil {
			return nil, errNoCustomerKey
		}
		key = sec.customerKey
	}
	if cfg.customerKey == key {
		return cfg, nil
	}
	// settings are shared read-only once served; a copy carries the key.
	c := *cfg
	c.customerKey = key
	return &c, nil
}

// pseudonymize is customer as it is stored under this config: its
// pseudonym when pseudonymizeCustomers is on, itself otherwise.
func (c *settings) pseudonymize(customer string) string {
	if c.customerKey == nil {
		return customer
	}
	return c.customerKey.ID(customer)
}

// pseudonymize is customer as the collector stores it now: its pseudonym
// when pseudonymizeCustomers is on, itself otherwise. Endpoints that take
// a customer id from a caller (an erasure or access request) look it up
// by this.
func (s *Server) pseudonymize(customer string) string {
	return s.cfg.Load().pseudonymize(customer)
}

// storedCustomer is the customer of a record as it is stored: pseudonymised
// unless it comes from an invitation, whose customer was stored (and so
// pseudonymised) when the interaction or the wave that made it arrived.
func (v *validator) storedCustomer(customer string) string {
	if v.customerAsStored {
		return customer
	}
	return v.cfg.pseudonymize(customer)
}

// customerKeyChanged reports whether a reload replaces one customer key
// with another: every pseudonym changes then, which splits every
// customer in two.
func customerKeyChanged(old, next *secrets) bool {
	if old == nil || next == nil || old.customerKey == nil || next.customerKey == nil {
		return false
	}
	return !old.customerKey.Equal(next.customerKey)
}

// pairReload decides what a reload puts in force when the config and the
// secrets file must agree (pseudonymizeCustomers needs customerIDKey), and
// the two files change apart (a ConfigMap and a Secret volume are updated
// at different moments). nextCfg and nextSec are the files read and
// parsed but not yet in force (nil: none). Both go in together when they
// agree; else either alone with the other's version in force; else
// neither, and both stay pending, so that the file that completes the pair
// puts them in force when it arrives. It returns the config (keyed) and
// secrets to serve, which of the pending files went in, and why a pending
// one could not.
func pairReload(cfg *settings, sec *secrets, nextCfg *settings, nextSec *secrets) (*settings, *secrets, bool, bool, error) {
	type pair struct {
		cfg *settings
		sec *secrets
	}
	tries := []pair{{cmpOr(nextCfg, cfg), cmpOr(nextSec, sec)}}
	if nextCfg != nil && nextSec != nil {
		tries = append(tries, pair{nextCfg, sec}, pair{cfg, nextSec})
	}
	var firstErr error
	for _, p := range tries {
		keyed, err := withCustomerKey(p.cfg, p.sec)
		if err != nil {
			firstErr = cmpOr(firstErr, err)
			continue
		}
		return keyed, p.sec, nextCfg != nil && p.cfg == nextCfg, nextSec != nil && p.sec == nextSec, firstErr
	}
	return cfg, sec, false, false, firstErr
}

// cmpOr is cmp.Or for values that are not cmp.Ordered: the first non-nil.
func cmpOr[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}
