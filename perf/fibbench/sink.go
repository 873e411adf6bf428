package fibbench

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf/link"

	"github.com/fibmesh/fibmesh/xdp/sink"
)

// sinkProg counts and drops UDP to one port on the receiving pod's
// interface (xdp/sink).
type sinkProg struct {
	objs sink.SinkObjects
	l    link.Link
}

// attachSink must run in the interface's network namespace.
func attachSink(ifname string, port uint16) (*sinkProg, error) {
	spec, err := sink.LoadSink()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["sink_port"].Set(port); err != nil {
		return nil, fmt.Errorf("sink port: %w", err)
	}
	s := &sinkProg{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("load sink: %w", err)
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		s.objs.Close()
		return nil, err
	}
	s.l, err = link.AttachXDP(link.XDPOptions{Program: s.objs.XdpSink, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		s.objs.Close()
		return nil, fmt.Errorf("attach sink to %s: %w", ifname, err)
	}
	return s, nil
}

func (s *sinkProg) count() (uint64, error) {
	var per []uint64
	if err := s.objs.SinkCount.Lookup(uint32(0), &per); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

func (s *sinkProg) Close() error {
	s.l.Close()
	return s.objs.Close()
}
