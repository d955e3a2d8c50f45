package kafka_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		sink  bool
		cfg   string
		field string
	}{
		{cfg: `{"brokers":["b:9092"]}`, field: "topic"},
		{cfg: `{"topic":"a b"}`, field: "topic"},
		{cfg: `{"topic":"t","format":"avro"}`, field: "format"},
		{cfg: `{"topic":"t","format":"record","columns":[{"name":"a","type":"string"}]}`, field: "columns"},
		{cfg: `{"topic":"t","encoding":"base64"}`, field: "encoding"},
		{cfg: `{"topic":"t","start":"yesterday"}`, field: "start"},
		{cfg: `{"topic":"t","isolation":"dirty"}`, field: "isolation"},
		{cfg: `{"topic":"t","auth_env":"my-env"}`, field: "auth_env"},
		{cfg: `{"topic":"t","auth_env":"AWS"}`, field: "auth_env"},
		{cfg: `{"topic":"t","brokers":["a b"]}`, field: "brokers[0]"},
		{cfg: `{"topic":"t","password":"x"}`, field: "password"},
		{cfg: `{"topic":"t","columns":[{"name":"a","type":"varchar"}]}`, field: "columns"},
		{sink: true, cfg: `{"topic":"t","staging_topic":"t"}`, field: "staging_topic"},
		{sink: true, cfg: `{"topic":"t","transaction_timeout":"1h"}`, field: "transaction_timeout"},
		{sink: true, cfg: `{"topic":"t","staging_retention":"soon"}`, field: "staging_retention"},
		{sink: true, cfg: `{"topic":"t","key":[""]}`, field: "key[0]"},
		{sink: true, cfg: `{"topic":"t","partitions":-1}`, field: "partitions"},
	} {
		validate := kafka.ValidateSource
		if tc.sink {
			validate = kafka.ValidateSink
		}
		err := validate(json.RawMessage(tc.cfg))
		var fe *connectors.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: %v, want an error on %s", tc.cfg, err, tc.field)
		}
	}
	for _, ok := range []string{`{"topic":"t"}`, `{"topic":"t","format":"record","encoding":"base64","start":"2026-01-01T00:00:00Z"}`,
		`{"topic":"t","metadata":true,"columns":[{"name":"a","type":"int64"}]}`} {
		if err := kafka.ValidateSource(json.RawMessage(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// SASL credentials come from the environment named by auth_env, never
// from the spec: with them the source reaches a cluster that requires
// SCRAM or PLAIN; without them, or with a wrong password, it fails saying
// which variable is wrong, never showing the value.
func TestSASLFromEnvironment(t *testing.T) {
	c := kafkatest.Start(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "admin", "s3cret"), kfake.Superuser("PLAIN", "plain", "p1ain"))
	admin := c.Client(t, kafkatest.SASL("SCRAM-SHA-256", "admin", "s3cret"))
	c.CreateTopicWith(t, admin, "events", 2)
	for _, tc := range []struct{ mech, user, pass string }{{"SCRAM-SHA-256", "admin", "s3cret"}, {"PLAIN", "plain", "p1ain"}} {
		t.Setenv("SLUICE_KAFKA_A_SASL_MECHANISM", tc.mech)
		t.Setenv("SLUICE_KAFKA_A_USERNAME", tc.user)
		t.Setenv("SLUICE_KAFKA_A_PASSWORD", tc.pass)
		cfg := kafka.SourceConfig{Cluster: kafka.Cluster{Brokers: c.Brokers, AuthEnv: "SLUICE_KAFKA_A"}, Topic: "events"}
		src := openSource(t, cfg)
		if found, err := src.Check(t.Context(), connectors.CheckRequest{}); err != nil || !strings.Contains(found, "2 partitions") {
			t.Errorf("%s: check = %q, %v", tc.mech, found, err)
		}
		src.Close()
	}
	t.Setenv("SLUICE_KAFKA_A_PASSWORD", "wrong")
	wrong := openSource(t, kafka.SourceConfig{Cluster: kafka.Cluster{Brokers: c.Brokers, AuthEnv: "SLUICE_KAFKA_A"}, Topic: "events"})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	if _, err := wrong.Check(ctx, connectors.CheckRequest{}); err == nil {
		t.Errorf("a wrong password reached the cluster")
	}
	cancel()
	wrong.Close()
	t.Setenv("SLUICE_KAFKA_A_PASSWORD", "")
	if _, err := kafka.NewSource(kafka.SourceConfig{Cluster: kafka.Cluster{Brokers: c.Brokers, AuthEnv: "SLUICE_KAFKA_A"}, Topic: "events"}); err == nil || !strings.Contains(err.Error(), "SLUICE_KAFKA_A_PASSWORD") {
		t.Errorf("without a password: %v, want an error naming SLUICE_KAFKA_A_PASSWORD", err)
	}
	t.Setenv("SLUICE_KAFKA_A_SASL_MECHANISM", "GSSAPI")
	t.Setenv("SLUICE_KAFKA_A_PASSWORD", "p1ain")
	if _, err := kafka.NewSource(kafka.SourceConfig{Cluster: kafka.Cluster{Brokers: c.Brokers, AuthEnv: "SLUICE_KAFKA_A"}, Topic: "events"}); err == nil || !strings.Contains(err.Error(), "SLUICE_KAFKA_A_SASL_MECHANISM") || strings.Contains(err.Error(), "p1ain") {
		t.Errorf("an unknown mechanism: %v, want an error naming the variable, not the password", err)
	}
	t.Setenv("SLUICE_KAFKA_A_BROKERS", strings.Join(c.Brokers, ","))
	t.Setenv("SLUICE_KAFKA_A_SASL_MECHANISM", "PLAIN")
	t.Setenv("SLUICE_KAFKA_A_USERNAME", "plain")
	src := openSource(t, kafka.SourceConfig{Cluster: kafka.Cluster{AuthEnv: "SLUICE_KAFKA_A"}, Topic: "events"})
	defer src.Close()
	if _, err := src.Check(t.Context(), connectors.CheckRequest{}); err != nil {
		t.Errorf("brokers from SLUICE_KAFKA_A_BROKERS: %v", err)
	}
}
