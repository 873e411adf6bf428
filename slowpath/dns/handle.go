package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Sizes of answers.
const (
	minUDPSize = 512   // without EDNS0 (RFC 1035)
	maxTCPSize = 65535 // a TCP message's 16-bit length
)

// handle answers the query q: udp says the transport (UDP answers are
// bounded by the client's size). It returns nil when there is nothing to
// answer (not a query, or too short to carry an ID).
func (s *Server) handle(ctx context.Context, q []byte, udp bool) []byte {
	if len(q) > MaxQuerySize {
		return nil
	}
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil
	}
	limit := maxTCPSize
	if udp {
		limit = minUDPSize
	}
	if h.OpCode != 0 {
		return s.reply(h, nil, false, dnsmessage.RCodeNotImplemented, nil, false, limit)
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return s.reply(h, nil, false, dnsmessage.RCodeFormatError, nil, false, limit)
	}
	question := qs[0]
	edns := false
	if p.SkipAllAnswers() == nil && p.SkipAllAuthorities() == nil {
		for {
			rh, err := p.AdditionalHeader()
			if err != nil {
				break
			}
			if rh.Type == dnsmessage.TypeOPT {
				edns = true
				if udp && int(rh.Class) > limit {
					limit = min(int(rh.Class), MaxUDPSize)
				}
				break
			}
			if p.SkipAdditional() != nil {
				break
			}
		}
	}
	if s.cfg.Hosts == nil {
		return s.reply(h, &question, false, dnsmessage.RCodeServerFailure, nil, edns, limit)
	}
	name := strings.ToLower(strings.TrimSuffix(question.Name.String(), "."))
	if question.Class == dnsmessage.ClassINET || question.Class == dnsmessage.ClassANY {
		if addrs, found := s.lookup(s.cfg.Hosts(), name); found {
			var rrs []dnsmessage.Resource
			for _, a := range addrs {
				rh := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: s.ttl}
				switch {
				case a.Is4() && question.Type == dnsmessage.TypeA:
					rh.Type = dnsmessage.TypeA
					rrs = append(rrs, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AResource{A: a.As4()}})
				case a.Is6() && !a.Is4In6() && question.Type == dnsmessage.TypeAAAA:
					rh.Type = dnsmessage.TypeAAAA
					rrs = append(rrs, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
				}
			}
			return s.reply(h, &question, true, dnsmessage.RCodeSuccess, rrs, edns, limit)
		}
	}
	if s.cfg.Upstream == "" {
		return s.reply(h, &question, false, dnsmessage.RCodeRefused, nil, edns, limit)
	}
	resp, err := s.forward(ctx, q, h.ID, udp, limit)
	if err != nil {
		return s.reply(h, &question, false, dnsmessage.RCodeServerFailure, nil, edns, limit)
	}
	if len(resp) > limit { // an upstream that ignored the client's size
		return s.truncated(resp, h, &question, edns, limit)
	}
	return resp
}

// reply builds an answer to the query with header h: question echoed
// (nil when it could not be read), answers, an OPT record when the query
// had one. An answer larger than limit is sent without its records, with
// TC set, so the client asks again over TCP.
func (s *Server) reply(h dnsmessage.Header, q *dnsmessage.Question, authoritative bool, rcode dnsmessage.RCode, answers []dnsmessage.Resource, edns bool, limit int) []byte {
	b, err := s.build(h, q, authoritative, false, rcode, answers, edns)
	if err == nil && len(b) > limit {
		b, err = s.build(h, q, authoritative, true, rcode, nil, edns)
	}
	if err != nil || len(b) > limit {
		// Only a question name too long for the limit gets here: answer
		// with the header alone.
		b, _ = s.build(h, nil, authoritative, true, dnsmessage.RCodeFormatError, nil, false)
	}
	return b
}

func (s *Server) build(h dnsmessage.Header, q *dnsmessage.Question, authoritative, truncated bool, rcode dnsmessage.RCode, answers []dnsmessage.Resource, edns bool) ([]byte, error) {
	bld := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{
		ID:                 h.ID,
		Response:           true,
		OpCode:             h.OpCode,
		Authoritative:      authoritative,
		Truncated:          truncated,
		RecursionDesired:   h.RecursionDesired,
		RecursionAvailable: s.cfg.Upstream != "",
		RCode:              rcode,
	})
	bld.EnableCompression()
	if q != nil {
		if err := bld.StartQuestions(); err != nil {
			return nil, err
		}
		if err := bld.Question(*q); err != nil {
			return nil, err
		}
	}
	if err := bld.StartAnswers(); err != nil {
		return nil, err
	}
	for _, rr := range answers {
		var err error
		switch body := rr.Body.(type) {
		case *dnsmessage.AResource:
			err = bld.AResource(rr.Header, *body)
		case *dnsmessage.AAAAResource:
			err = bld.AAAAResource(rr.Header, *body)
		}
		if err != nil {
			return nil, err
		}
	}
	if edns {
		if err := bld.StartAdditionals(); err != nil {
			return nil, err
		}
		var rh dnsmessage.ResourceHeader
		if err := rh.SetEDNS0(MaxUDPSize, dnsmessage.RCodeSuccess, false); err != nil {
			return nil, err
		}
		if err := bld.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
			return nil, err
		}
	}
	return bld.Finish()
}

// truncated turns an upstream answer too large for the client into an
// empty one with TC set, keeping its rcode and flags.
func (s *Server) truncated(resp []byte, h dnsmessage.Header, q *dnsmessage.Question, edns bool, limit int) []byte {
	var p dnsmessage.Parser
	rh, err := p.Start(resp)
	if err != nil {
		return s.reply(h, q, false, dnsmessage.RCodeServerFailure, nil, edns, limit)
	}
	b, err := s.build(h, q, rh.Authoritative, true, rh.RCode, nil, edns)
	if err != nil || len(b) > limit {
		return s.reply(h, q, false, dnsmessage.RCodeServerFailure, nil, edns, limit)
	}
	return b
}

// errUpstream is a malformed or mismatched upstream answer.
var errUpstream = errors.New("upstream answer does not match the query")

// forward sends the query q (ID id) to the upstream resolver over UDP,
// and again over TCP when the answer is truncated; an answer over TCP that
// does not fit a UDP client's limit is not used: the client gets the
// truncated one and asks again over TCP.
func (s *Server) forward(ctx context.Context, q []byte, id uint16, udp bool, limit int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	resp, err := s.exchange(ctx, "udp", q, id)
	if err != nil {
		return nil, err
	}
	if resp[2]&0x02 == 0 { // TC
		return resp, nil
	}
	full, err := s.exchange(ctx, "tcp", q, id)
	if err != nil || (udp && len(full) > limit) {
		return resp, nil
	}
	return full, nil
}

// exchange sends q to the upstream over network and returns the answer
// with ID id.
func (s *Server) exchange(ctx context.Context, network string, q []byte, id uint16) ([]byte, error) {
	c, err := s.cfg.Dial(ctx, network, s.cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s over %s: %w", s.cfg.Upstream, network, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	if network == "tcp" {
		msg := make([]byte, 2+len(q))
		binary.BigEndian.PutUint16(msg, uint16(len(q)))
		copy(msg[2:], q)
		if _, err := c.Write(msg); err != nil {
			return nil, fmt.Errorf("send to upstream %s: %w", s.cfg.Upstream, err)
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, fmt.Errorf("read from upstream %s: %w", s.cfg.Upstream, err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, resp); err != nil {
			return nil, fmt.Errorf("read from upstream %s: %w", s.cfg.Upstream, err)
		}
		if !answers(resp, id) {
			return nil, errUpstream
		}
		return resp, nil
	}
	if _, err := c.Write(q); err != nil {
		return nil, fmt.Errorf("send to upstream %s: %w", s.cfg.Upstream, err)
	}
	buf := make([]byte, maxTCPSize)
	for { // skip stray datagrams until the deadline
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("read from upstream %s: %w", s.cfg.Upstream, err)
		}
		if answers(buf[:n], id) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

// answers reports whether resp is a response with ID id.
func answers(resp []byte, id uint16) bool {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	return err == nil && h.Response && h.ID == id
}
