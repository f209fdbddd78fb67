package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestErrorClasses pins which server answers a caller sees as
// ErrUnavailable (a 503 to retry), which are retried in place, and which
// are neither.
func TestErrorClasses(t *testing.T) {
	pg := func(code string) error { return fmt.Errorf("commit: %w", &pgconn.PgError{Code: code, Message: "x"}) }
	cases := []struct {
		name                   string
		err                    error
		unavailable, retryable bool
	}{
		{"admin shutdown", pg("57P01"), true, false},
		{"cannot connect now (starting up)", pg("57P03"), true, false},
		{"connection failure", pg("08006"), true, false},
		{"too many connections", pg("53300"), true, false},
		{"read-only transaction (a standby)", pg("25006"), true, false},
		{"serialization failure", pg("40001"), true, true},
		{"deadlock", pg("40P01"), true, true},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true, false},
		{"commit timeout", context.DeadlineExceeded, true, false},
		{"unique violation", pg("23505"), false, false},
		{"undefined table", pg("42P01"), false, false},
		{"invalid input", pg("22P02"), false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := errors.Is(unavailable(c.err), ErrUnavailable); got != c.unavailable {
				t.Errorf("ErrUnavailable: %v, want %v", got, c.unavailable)
			}
			if got := retryable(c.err); got != c.retryable {
				t.Errorf("retryable: %v, want %v", got, c.retryable)
			}
			if w := unavailable(c.err); !errors.Is(w, c.err) {
				t.Errorf("the wrapped error %v lost the original", w)
			}
		})
	}
}
