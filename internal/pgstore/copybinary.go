package pgstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Appends write their rows with COPY in PostgreSQL's binary format, encoded
// here rather than by pgx's CopyFrom. pgx encodes each value through its
// type map (a plan looked up per value, every value boxed in an interface),
// streams the rows through a pipe and a goroutine of its own, and first
// needs the columns' types: a description of the table that costs a round
// trip per COPY when the statement cache is off (PgBouncer in transaction
// mode). That was a seventh of a replica's CPU under ingest. The append's
// columns are few and fixed (bigint, smallint, double precision, text,
// bytea), and their binary forms are a length and the bytes: text as UTF-8
// (storable checks it first), the numbers in network byte order.

// copyRows is the body of one binary COPY: a header, rows, and a trailer
// that bytes adds.
type copyRows struct {
	buf    []byte
	fields int
	rows   int
}

// copySignature opens every binary COPY stream, followed by 32-bit flags
// and header-extension length, both zero.
const copySignature = "PGCOPY\n\377\r\n\000"

func newCopyRows(fields, sizeHint int) *copyRows {
	c := &copyRows{buf: make([]byte, 0, len(copySignature)+8+sizeHint+2), fields: fields}
	c.buf = append(c.buf, copySignature...)
	c.buf = binary.BigEndian.AppendUint32(c.buf, 0)
	c.buf = binary.BigEndian.AppendUint32(c.buf, 0)
	return c
}

// row starts a row; exactly c.fields values follow.
func (c *copyRows) row() {
	c.buf = binary.BigEndian.AppendUint16(c.buf, uint16(c.fields))
	c.rows++
}

func (c *copyRows) int64(v int64) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, 8)
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(v))
}

func (c *copyRows) int16(v int16) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, 2)
	c.buf = binary.BigEndian.AppendUint16(c.buf, uint16(v))
}

func (c *copyRows) float64(v float64) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, 8)
	c.buf = binary.BigEndian.AppendUint64(c.buf, math.Float64bits(v))
}

func (c *copyRows) text(s string) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(s)))
	c.buf = append(c.buf, s...)
}

func (c *copyRows) bytea(b []byte) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(b)))
	c.buf = append(c.buf, b...)
}

// bytes ends the stream with its trailer (a field count of -1).
func (c *copyRows) bytes() []byte {
	return binary.BigEndian.AppendUint16(c.buf, math.MaxUint16)
}

// copyStatement is the COPY … FROM STDIN statement for a table's columns,
// in the order a copyRows gives their values.
func copyStatement(table string, columns ...string) string {
	return "COPY " + pgx.Identifier{table}.Sanitize() + " (" + strings.Join(columns, ", ") + ") FROM STDIN (FORMAT binary)"
}

// copyInto runs a COPY statement (copyStatement) with rows in the
// transaction. It fails unless PostgreSQL stored every row.
func copyInto(ctx context.Context, tx pgx.Tx, statement string, rows *copyRows) error {
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(rows.bytes()), statement)
	if err != nil {
		return err
	}
	if n := tag.RowsAffected(); n != int64(rows.rows) {
		return fmt.Errorf("COPY stored %d rows of %d", n, rows.rows)
	}
	return nil
}
