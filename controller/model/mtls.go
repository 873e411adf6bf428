package model

import (
	"cmp"
	"strings"

	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// peerAuthn is the PeerAuthentications by level: the mesh-wide one, each
// namespace's namespace-wide one, and each namespace's workload-selecting
// ones. Where several compete at one level (analyze reports it), the
// oldest wins, then the first by name, as in Istio.
type peerAuthn struct {
	mesh     *securityv1.PeerAuthentication
	ns       map[string]*securityv1.PeerAuthentication
	selected map[string][]*securityv1.PeerAuthentication
}

// indexPeerAuthn sorts the policies into levels. A selector without
// labels selects like no selector: the policy is namespace-wide.
func indexPeerAuthn(pas []*securityv1.PeerAuthentication) *peerAuthn {
	x := &peerAuthn{ns: map[string]*securityv1.PeerAuthentication{}, selected: map[string][]*securityv1.PeerAuthentication{}}
	for _, pa := range pas {
		switch {
		case len(pa.Spec.GetSelector().GetMatchLabels()) > 0:
			x.selected[pa.Namespace] = append(x.selected[pa.Namespace], pa)
		case pa.Namespace == RootNamespace:
			x.mesh = older(x.mesh, pa)
			x.ns[pa.Namespace] = older(x.ns[pa.Namespace], pa)
		default:
			x.ns[pa.Namespace] = older(x.ns[pa.Namespace], pa)
		}
	}
	return x
}

// older returns the policy that wins between two at one level.
func older(cur, c *securityv1.PeerAuthentication) *securityv1.PeerAuthentication {
	if cur == nil {
		return c
	}
	if cmp.Or(cur.CreationTimestamp.Compare(c.CreationTimestamp.Time), strings.Compare(cur.Name, c.Name)) > 0 {
		return c
	}
	return cur
}

// meshMode is the mesh-wide mode.
func (x *peerAuthn) meshMode() Mode {
	if x.mesh == nil {
		return ModePermissive
	}
	return apply(ModePermissive, x.mesh.Spec.GetMtls().GetMode())
}

// namespaceModes are the modes of namespaces with a namespace-wide
// policy, or nil.
func (x *peerAuthn) namespaceModes() map[string]Mode {
	if len(x.ns) == 0 {
		return nil
	}
	out := make(map[string]Mode, len(x.ns))
	for ns, pa := range x.ns {
		out[ns] = apply(x.meshMode(), pa.Spec.GetMtls().GetMode())
	}
	return out
}

// resolve sets the workload's mTLS modes with Istio's precedence: a
// policy selecting the workload in its namespace, over the namespace's
// policy without a selector, over the mesh-wide policy (RootNamespace, no
// selector). UNSET inherits from the level above; with nothing set the
// mode is PERMISSIVE. Port-level settings (portLevelMtls) apply only
// from a workload-selecting policy, as in Istio, and an UNSET port
// inherits the workload's mode.
func (x *peerAuthn) resolve(w *Workload) {
	mode := x.meshMode()
	if w.Namespace != RootNamespace {
		if pa := x.ns[w.Namespace]; pa != nil {
			mode = apply(mode, pa.Spec.GetMtls().GetMode())
		}
	}
	var wl *securityv1.PeerAuthentication
	for _, pa := range x.selected[w.Namespace] {
		if labels.SelectorFromSet(pa.Spec.GetSelector().GetMatchLabels()).Matches(labels.Set(w.Labels)) {
			wl = older(wl, pa)
		}
	}
	if wl == nil {
		w.DefaultMode = mode
		return
	}
	mode = apply(mode, wl.Spec.GetMtls().GetMode())
	w.DefaultMode = mode
	for port, pm := range wl.Spec.GetPortLevelMtls() {
		if m := apply(mode, pm.GetMode()); m != mode {
			if w.PortModes == nil {
				w.PortModes = map[uint32]Mode{}
			}
			w.PortModes[port] = m
		}
	}
}

// apply is the mode m set on top of its parent's: UNSET inherits.
func apply(parent Mode, m securityv1beta1.PeerAuthentication_MutualTLS_Mode) Mode {
	switch m {
	case securityv1beta1.PeerAuthentication_MutualTLS_STRICT:
		return ModeStrict
	case securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE:
		return ModePermissive
	case securityv1beta1.PeerAuthentication_MutualTLS_DISABLE:
		return ModeDisable
	}
	return parent
}
