package model

import (
	"errors"
	"fmt"
	"hash/maphash"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fibmesh/fibmesh/controller/config"
)

// ErrUnusable is wrapped by Build's errors: the input cannot make a
// model, and the model in force should stay.
var ErrUnusable = errors.New("unusable input")

// validate checks what the model needs to be usable, and sorts the
// snapshot's objects by kind:
//   - a snapshot, and a valid trust domain (identities are built on it);
//   - every consumed object present (no nil Object), named, and in a
//     namespace where its kind is namespaced: hostnames, workload keys
//     and identities are built from those;
//   - no object twice (same kind, namespace and name): the model could
//     not say which one is in force.
//
// Everything else is represented as written; analyze reports it.
//
// The duplicate check costs a map of every object's key. prevKeys is the
// hash of the sequence of keys of a snapshot validated before (0: none):
// a snapshot whose keys are that very sequence holds no duplicate either
// (the usual edit replaces an object and keeps its name), and only its
// keys are hashed. That check was half of a readiness flip's model build
// at 12,000 objects (bench-xds). validate returns the hash of s's keys.
func validate(s *config.Snapshot, o Options, prevKeys uint64) (*inputs, uint64, error) {
	in, sum, err := validateOnce(s, o, prevKeys == 0)
	if err == nil && prevKeys != 0 && sum != prevKeys {
		// Objects were added, removed or renamed: check them all.
		in, sum, err = validateOnce(s, o, true)
	}
	return in, sum, err
}

// keySeed seeds the hashes of key sequences (this process's models).
var keySeed = maphash.MakeSeed()

// validateOnce is validate, with the duplicate check or without it.
func validateOnce(s *config.Snapshot, o Options, checkDuplicates bool) (*inputs, uint64, error) {
	if s == nil {
		return nil, 0, fmt.Errorf("%w: no snapshot", ErrUnusable)
	}
	if td := o.TrustDomain; strings.ContainsAny(td, "/:?#@ \t\n") || strings.ToLower(td) != td {
		return nil, 0, fmt.Errorf("%w: trust domain %q: want a lower-case DNS-like name without '/', ':' or spaces", ErrUnusable, td)
	}
	in := &inputs{}
	var seen map[string]config.Source
	if checkDuplicates {
		seen = make(map[string]config.Source, len(s.Resources))
	}
	var h maphash.Hash
	h.SetSeed(keySeed)
	for _, r := range s.Resources {
		var (
			meta       *metav1.ObjectMeta
			kind       string
			namespaced = true
			isNil      bool
		)
		switch obj := r.Object.(type) {
		case *corev1.Service:
			kind, isNil = "Service", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
				in.services = append(in.services, obj)
			}
		case *discoveryv1.EndpointSlice:
			kind, isNil = "EndpointSlice", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
				in.slices = append(in.slices, obj)
			}
		case *corev1.Pod:
			kind, isNil = "Pod", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
				in.pods = append(in.pods, obj)
			}
		case *corev1.Node:
			kind, isNil, namespaced = "Node", obj == nil, false
			if !isNil {
				meta = &obj.ObjectMeta
				in.nodes = append(in.nodes, obj)
			}
		case *corev1.Namespace:
			kind, isNil, namespaced = "Namespace", obj == nil, false
			if !isNil {
				meta = &obj.ObjectMeta
				in.namespaces = append(in.namespaces, obj)
			}
		case *corev1.ServiceAccount:
			kind, isNil = "ServiceAccount", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
			}
		case *securityv1.PeerAuthentication:
			kind, isNil = "PeerAuthentication", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
				in.pas = append(in.pas, obj)
			}
		case *networkingv1.VirtualService:
			kind, isNil = "VirtualService", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
				in.vss = append(in.vss, obj)
			}
		case *networkingv1.DestinationRule:
			kind, isNil = "DestinationRule", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
				in.drs = append(in.drs, obj)
			}
		case *networkingv1.ServiceEntry:
			kind, isNil = "ServiceEntry", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
				in.ses = append(in.ses, obj)
			}
		case *securityv1.AuthorizationPolicy:
			kind, isNil = "AuthorizationPolicy", obj == nil
			if !isNil {
				meta = &obj.ObjectMeta
				in.aps = append(in.aps, obj)
			}
		case nil:
			return nil, 0, fmt.Errorf("%w: %s from %s: no object", ErrUnusable, r.Key(), r.Source)
		default:
			// A kind the model does not consume: the config layer's
			// business (it returns those as Skipped).
			continue
		}
		if isNil {
			return nil, 0, fmt.Errorf("%w: %s from %s: nil %s", ErrUnusable, r.Key(), r.Source, kind)
		}
		switch {
		case meta.Name == "":
			return nil, 0, fmt.Errorf("%w: %s from %s: metadata.name is empty", ErrUnusable, kind, r.Source)
		case namespaced && meta.Namespace == "":
			return nil, 0, fmt.Errorf("%w: %s %s from %s: metadata.namespace is empty (the config store sets \"default\")", ErrUnusable, kind, meta.Name, r.Source)
		}
		ns := meta.Namespace
		if !namespaced {
			ns = ""
		}
		h.WriteString(kind)
		h.WriteByte(0)
		h.WriteString(ns)
		h.WriteByte(0)
		h.WriteString(meta.Name)
		h.WriteByte(0)
		if !checkDuplicates {
			continue
		}
		key := kind + " " + meta.Namespace + "/" + meta.Name
		if !namespaced {
			key = kind + " " + meta.Name
		}
		if first, dup := seen[key]; dup {
			return nil, 0, fmt.Errorf("%w: duplicate %s: from %s and %s", ErrUnusable, key, first, r.Source)
		}
		seen[key] = r.Source
	}
	return in, h.Sum64() | 1, nil // never 0, which says "none"
}
