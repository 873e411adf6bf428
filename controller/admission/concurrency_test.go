package admission

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fibmesh/fibmesh/controller/config"
)

// TestMaxConcurrent: with every slot taken, a review waits for one, and
// is answered 503 when its request ends first; a freed slot serves the
// next review.
func TestMaxConcurrent(t *testing.T) {
	snap := examples(t)
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	h, err := New(Options{MaxConcurrent: 1, Snapshot: func() *config.Snapshot {
		if first { // only the first review reads it while another waits
			first = false
			close(entered)
			<-release
		}
		return snap
	}})
	if err != nil {
		t.Fatal(err)
	}
	body := review(t, "CREATE", fmt.Sprintf(vsReviews, "90", "10"))
	send := func(ctx context.Context) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, Path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(w, r)
		return w
	}
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- send(context.Background()) }()
	<-entered

	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("the API server's webhook timeout"))
	if w := send(ctx); w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "1 reviews already in progress") || !strings.Contains(w.Body.String(), "webhook timeout") {
		t.Errorf("review with every slot taken: %d %q, want 503 naming the limit and the cause", w.Code, w.Body)
	}

	close(release)
	if w := <-done; w.Code != http.StatusOK {
		t.Errorf("first review: %d %s", w.Code, w.Body)
	}
	if w := send(context.Background()); w.Code != http.StatusOK {
		t.Errorf("review after the slot was freed: %d %s", w.Code, w.Body)
	}
}
