package netnstest

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// record returns a TLS record with typ, version and a payload of n bytes.
func record(typ uint8, version uint16, n int) []byte {
	b := []byte{typ, byte(version >> 8), byte(version), byte(n >> 8), byte(n)}
	return append(b, bytes.Repeat([]byte{0xa5}, n)...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseTLSRecords(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    []TLSRecord
		wantErr string // substring; "" for none
	}{
		{name: "empty stream", in: nil},
		{
			name: "handshake then application data",
			in:   cat(record(RecordHandshake, 0x0301, 3), record(RecordChangeCipherSpec, 0x0303, 1), record(RecordApplicationData, 0x0303, 40)),
			want: []TLSRecord{
				{Offset: 0, Type: RecordHandshake, Version: 0x0301, Length: 3},
				{Offset: 8, Type: RecordChangeCipherSpec, Version: 0x0303, Length: 1},
				{Offset: 14, Type: RecordApplicationData, Version: 0x0303, Length: 40},
			},
		},
		{
			name: "largest record",
			in:   record(RecordApplicationData, 0x0303, MaxRecordLen),
			want: []TLSRecord{{Type: RecordApplicationData, Version: 0x0303, Length: MaxRecordLen}},
		},
		{name: "alert and heartbeat", in: cat(record(RecordAlert, 0x0302, 2), record(RecordHeartbeat, 0x0303, 3)),
			want: []TLSRecord{{Type: RecordAlert, Version: 0x0302, Length: 2}, {Offset: 7, Type: RecordHeartbeat, Version: 0x0303, Length: 3}}},
		{name: "record too long", in: record(RecordApplicationData, 0x0303, MaxRecordLen+1), wantErr: "offset 0: application_data record of 18433 bytes"},
		{name: "empty record", in: record(RecordHandshake, 0x0303, 0), wantErr: "offset 0: empty handshake record"},
		{name: "plaintext HTTP", in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wantErr: "offset 0: byte 0x47 is not a TLS record content type"},
		{name: "bad type after a good record", in: cat(record(RecordApplicationData, 0x0303, 4), []byte{19, 3, 3, 0, 1, 0}), wantErr: "offset 9: byte 0x13"},
		{name: "SSL 3.0", in: record(RecordHandshake, 0x0300, 1), wantErr: "record version 0x0300"},
		{name: "TLS 1.3 on the wire is 0x0303", in: record(RecordApplicationData, 0x0304, 1), wantErr: "record version 0x0304"},
		{name: "header cut short", in: []byte{23, 3, 3}, wantErr: "stream ends inside a TLS record"},
		{name: "payload cut short", in: record(RecordApplicationData, 0x0303, 10)[:12], wantErr: "record at offset 0: stream ends inside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTLSRecords(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseTLSRecords: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("records (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseTLSRecords error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestTLSRecordCheckerChunks(t *testing.T) {
	stream := cat(record(RecordHandshake, 0x0301, 300), record(RecordApplicationData, 0x0303, 17000), record(RecordAlert, 0x0303, 2))
	for _, chunk := range []int{1, 2, 5, 6, 7, 4096, len(stream)} {
		var c TLSRecordChecker
		for p := stream; len(p) > 0; p = p[min(chunk, len(p)):] {
			c.Write(p[:min(chunk, len(p))])
		}
		if err := c.Close(); err != nil {
			t.Fatalf("chunk %d: Close: %v", chunk, err)
		}
		if c.Records() != 3 || c.Count(RecordApplicationData) != 1 || c.Count(RecordHandshake) != 1 || c.Count(RecordAlert) != 1 {
			t.Errorf("chunk %d: %d records (%d app data)", chunk, c.Records(), c.Count(RecordApplicationData))
		}
	}
}

func TestTLSRecordCheckerTruncated(t *testing.T) {
	var c TLSRecordChecker
	c.Write(record(RecordApplicationData, 0x0303, 100)[:50])
	if err := c.Err(); err != nil {
		t.Errorf("Err of a stream cut inside a record: %v, want nil", err)
	}
	if err := c.Close(); !errors.Is(err, ErrPartialRecord) {
		t.Errorf("Close: %v, want ErrPartialRecord", err)
	}
	// Write never fails; the first error sticks.
	var bad TLSRecordChecker
	if n, err := bad.Write([]byte{1, 2, 3, 4, 5}); n != 5 || err != nil {
		t.Errorf("Write = %d, %v; want 5, nil", n, err)
	}
	first := bad.Err()
	if first == nil {
		t.Fatal("no error for type 1")
	}
	bad.Write(record(RecordHandshake, 0x0303, 1))
	if bad.Err() != first || bad.Close() != first || bad.Records() != 0 {
		t.Errorf("after an error: Err %v, Close %v, %d records; want the first error and none", bad.Err(), bad.Close(), bad.Records())
	}
}

// FuzzParseTLSRecords feeds the record parser arbitrary bytes (it parses
// what a capture read off the wire) and checks that any chunking of the
// input gives the same verdict as one Write.
func FuzzParseTLSRecords(f *testing.F) {
	f.Add(cat(record(RecordHandshake, 0x0301, 3), record(RecordApplicationData, 0x0303, 40)), 3)
	f.Add([]byte("GET / HTTP/1.1\r\n"), 1)
	f.Add([]byte{23, 3, 3, 0x48, 0x01}, 2)
	f.Fuzz(func(t *testing.T, b []byte, chunk int) {
		recs, err := ParseTLSRecords(b)
		var off int64
		for _, r := range recs {
			if r.Offset != off || r.Length < 1 || r.Length > MaxRecordLen {
				t.Fatalf("bad record %+v at expected offset %d", r, off)
			}
			off += 5 + int64(r.Length)
		}
		if err == nil && off != int64(len(b)) {
			t.Fatalf("no error, but records cover %d of %d bytes", off, len(b))
		}
		if chunk < 1 {
			chunk = 1
		}
		c := TLSRecordChecker{Keep: true}
		for p := b; len(p) > 0; p = p[min(chunk, len(p)):] {
			c.Write(p[:min(chunk, len(p))])
		}
		cerr := c.Close()
		if (err == nil) != (cerr == nil) || len(c.Headers()) != len(recs) {
			t.Fatalf("chunks of %d: %d records, err %v; one write: %d records, err %v", chunk, len(c.Headers()), cerr, len(recs), err)
		}
	})
}
