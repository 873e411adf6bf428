package analyze

// skippedKinds reports each object of a kind fibmesh does not consume.
func skippedKinds(ix *index) []Finding {
	var fs []Finding
	for _, r := range ix.snap.Skipped {
		gv := r.GVK.GroupVersion().String()
		fs = append(fs, finding(KindNotConsumed, r, "%s %s is not consumed by fibmesh", gv, r.Key()))
	}
	return fs
}
