package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUnavailable is what an error is (errors.Is) when the database cannot be
// reached or refused the work for a reason of its own state (shutting down,
// restarting, too many connections, a standby after a failover), or when a
// commit's outcome is unknown. Nothing of a refused request is acknowledged:
// the collector answers 503 with Retry-After, and a retry stores the records
// or finds them stored.
var ErrUnavailable = errors.New("the database is unavailable")

// unavailable wraps err as ErrUnavailable when it is one.
func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if isUnavailable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func isUnavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "53"), // insufficient resources
			strings.HasPrefix(pe.Code, "57"), // operator intervention: shutdown, crash, cannot connect now
			strings.HasPrefix(pe.Code, "58"), // system error
			pe.Code == "25006",               // read-only transaction: a standby, or a primary just demoted
			retryable(err):                   // still failing after the retries
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || pgconn.SafeToRetry(err) || isConnClosed(err)
}

// isConnClosed recognises pgx's errors for a connection that broke.
func isConnClosed(err error) bool {
	s := err.Error()
	return strings.Contains(s, "conn closed") || strings.Contains(s, "connection reset") ||
		strings.Contains(s, "broken pipe") || strings.Contains(s, "failed to deallocate cached statement")
}

// retryable reports errors a transaction is retried for: a serialization
// failure or a deadlock, which PostgreSQL (and every distributed engine
// that speaks its protocol) raises expecting the client to run the
// transaction again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// noPartition reports an insert into a day whose partition does not exist
// (dropped by retention since this replica last looked, or never made).
func noPartition(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23514" && strings.Contains(pe.Message, "no partition")
}

// alreadyExists reports a concurrent creation of the same table (two
// replicas creating a partition at once).
func alreadyExists(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42P07" || pe.Code == "23505" || pe.Code == "42710")
}
