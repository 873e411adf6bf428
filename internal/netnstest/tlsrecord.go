package netnstest

import (
	"errors"
	"fmt"
)

// TLS record content types (RFC 8446 section 5.1, RFC 6520).
const (
	RecordChangeCipherSpec = 20
	RecordAlert            = 21
	RecordHandshake        = 22
	RecordApplicationData  = 23
	RecordHeartbeat        = 24
)

// MaxRecordLen is the largest record payload on the wire: TLS 1.2's
// TLSCiphertext bound, 2^14 + 2048 (TLS 1.3's, 2^14 + 256, is smaller).
const MaxRecordLen = 1<<14 + 2048

// TLSRecord is one record header seen on the wire.
type TLSRecord struct {
	Offset  int64  // of the header in the stream
	Type    uint8  // RecordHandshake, RecordApplicationData, ...
	Version uint16 // legacy_record_version: 0x0301 to 0x0303
	Length  int    // of the payload that follows the 5-byte header
}

// ErrPartialRecord means the stream ended inside a record.
var ErrPartialRecord = errors.New("stream ends inside a TLS record")

// TLSRecordChecker checks that the bytes written to it, in any chunks,
// are a sequence of well-formed TLS records: a known content type, a
// version of 0x0301 to 0x0303, and a length of 1 to MaxRecordLen. It
// keeps only counts (and, with Keep, the headers), so it can follow a
// 100 MB stream as a Capture sink. Like a hash.Hash, it takes every
// Write without failing, so it can share an io.MultiWriter with other
// checks; the first framing error is kept for Err and Close. The zero
// value is ready.
type TLSRecordChecker struct {
	// Keep makes the checker record every header (Records).
	Keep bool

	off     int64 // bytes written
	hdr     [5]byte
	hdrN    int   // header bytes buffered
	left    int   // payload bytes of the current record still to come
	recOff  int64 // offset of the current record
	n       int64
	byType  [256]int64
	records []TLSRecord
	err     error
}

// Write consumes p and never fails. From the first byte that breaks the
// record framing on, it only counts bytes.
func (c *TLSRecordChecker) Write(p []byte) (int, error) {
	total := len(p)
	if c.err != nil {
		c.off += int64(total)
		return total, nil
	}
	for len(p) > 0 {
		if c.left > 0 {
			k := min(c.left, len(p))
			c.left -= k
			c.off += int64(k)
			p = p[k:]
			continue
		}
		if c.hdrN == 0 {
			c.recOff = c.off
		}
		k := copy(c.hdr[c.hdrN:], p)
		c.hdrN += k
		c.off += int64(k)
		p = p[k:]
		if c.hdrN < len(c.hdr) {
			break
		}
		c.hdrN = 0
		rec := TLSRecord{
			Offset:  c.recOff,
			Type:    c.hdr[0],
			Version: uint16(c.hdr[1])<<8 | uint16(c.hdr[2]),
			Length:  int(c.hdr[3])<<8 | int(c.hdr[4]),
		}
		if err := rec.check(); err != nil {
			c.err = err
			c.off += int64(len(p))
			return total, nil
		}
		c.n++
		c.byType[rec.Type]++
		if c.Keep {
			c.records = append(c.records, rec)
		}
		c.left = rec.Length
	}
	return total, nil
}

func (r TLSRecord) check() error {
	switch {
	case r.Type < RecordChangeCipherSpec || r.Type > RecordHeartbeat:
		return fmt.Errorf("offset %d: byte 0x%02x is not a TLS record content type (20 to 24)", r.Offset, r.Type)
	case r.Version < 0x0301 || r.Version > 0x0303:
		return fmt.Errorf("offset %d: record version 0x%04x, want 0x0301 to 0x0303", r.Offset, r.Version)
	case r.Length == 0:
		return fmt.Errorf("offset %d: empty %s record", r.Offset, recordTypeName(r.Type))
	case r.Length > MaxRecordLen:
		return fmt.Errorf("offset %d: %s record of %d bytes, more than %d", r.Offset, recordTypeName(r.Type), r.Length, MaxRecordLen)
	}
	return nil
}

func recordTypeName(t uint8) string {
	switch t {
	case RecordChangeCipherSpec:
		return "change_cipher_spec"
	case RecordAlert:
		return "alert"
	case RecordHandshake:
		return "handshake"
	case RecordApplicationData:
		return "application_data"
	case RecordHeartbeat:
		return "heartbeat"
	}
	return fmt.Sprintf("type-%d", t)
}

// Err returns the framing error, if any, without requiring the stream to
// end at a record boundary: use it for a stream that was cut short (a
// Stream with Truncated set).
func (c *TLSRecordChecker) Err() error { return c.err }

// Close returns the framing error, or ErrPartialRecord (wrapped, with the
// offset) if the stream ended inside a record.
func (c *TLSRecordChecker) Close() error {
	if c.err != nil {
		return c.err
	}
	if c.hdrN > 0 || c.left > 0 {
		return fmt.Errorf("record at offset %d: %w", c.recOff, ErrPartialRecord)
	}
	return nil
}

// Records returns the number of well-formed records seen.
func (c *TLSRecordChecker) Records() int64 { return c.n }

// Count returns how many records of content type typ were seen.
func (c *TLSRecordChecker) Count(typ uint8) int64 { return c.byType[typ] }

// Headers returns the records seen, if Keep was set.
func (c *TLSRecordChecker) Headers() []TLSRecord { return c.records }

// ParseTLSRecords parses b as a whole sequence of TLS records (see
// TLSRecordChecker) and returns their headers. It fails on the first
// malformed record and if b ends inside a record.
func ParseTLSRecords(b []byte) ([]TLSRecord, error) {
	c := TLSRecordChecker{Keep: true}
	c.Write(b)
	return c.records, c.Close()
}
