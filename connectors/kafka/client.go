package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The environment variables of a cluster's connection, each named
// <auth_env>_<suffix> (SLUICE_KAFKA_SASL_MECHANISM by default).
const (
	envBrokers       = "BROKERS"
	envSASLMechanism = "SASL_MECHANISM"
	envUsername      = "USERNAME"
	envPassword      = "PASSWORD"
	envPasswordFile  = "PASSWORD_FILE"
	envTLS           = "TLS"
	envTLSCAFile     = "TLS_CA_FILE"
	envTLSCertFile   = "TLS_CERT_FILE"
	envTLSKeyFile    = "TLS_KEY_FILE"
	envTLSServerName = "TLS_SERVER_NAME"
)

// options returns the client options that reach the cluster: its seed
// brokers and, from the environment lookup reads, SASL and TLS. An error
// names the variable at fault, never its value.
func (c Cluster) options(lookup func(string) (string, bool)) ([]kgo.Opt, error) {
	env := func(suffix string) (string, string) {
		name := c.authEnv() + "_" + suffix
		v, _ := lookup(name)
		return name, strings.TrimSpace(v)
	}
	brokers := c.Brokers
	if len(brokers) == 0 {
		_, v := env(envBrokers)
		for b := range strings.SplitSeq(v, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
	}
	if len(brokers) == 0 {
		return nil, errNoBrokers
	}
	clientID := c.ClientID
	if clientID == "" {
		clientID = "sluice"
	}
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ClientID(clientID)}

	mechName, mech := env(envSASLMechanism)
	if mech != "" {
		_, user := env(envUsername)
		pwName, pass := env(envPassword)
		if fileName, file := env(envPasswordFile); file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("read the password file %s names: %w", fileName, err)
			}
			pass = strings.TrimRight(string(b), "\r\n")
		}
		if user == "" || pass == "" {
			return nil, fmt.Errorf("%s is %s but %s or %s is not set", mechName, mech, c.authEnv()+"_"+envUsername, pwName)
		}
		switch strings.ToUpper(mech) {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
		default:
			return nil, fmt.Errorf("%s: unknown SASL mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", mechName, mech)
		}
	}

	tlsName, tlsOn := env(envTLS)
	_, caFile := env(envTLSCAFile)
	_, certFile := env(envTLSCertFile)
	_, keyFile := env(envTLSKeyFile)
	_, serverName := env(envTLSServerName)
	on := false
	if tlsOn != "" {
		b, err := strconv.ParseBool(tlsOn)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not true or false", tlsName, tlsOn)
		}
		on = b
	}
	if on || caFile != "" || certFile != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("read the CA file %s names: %w", c.authEnv()+"_"+envTLSCAFile, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("the CA file %s names holds no PEM certificate", c.authEnv()+"_"+envTLSCAFile)
			}
			cfg.RootCAs = pool
		}
		if certFile != "" || keyFile != "" {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("load the client certificate %s and %s name: %w", c.authEnv()+"_"+envTLSCertFile, c.authEnv()+"_"+envTLSKeyFile, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	return opts, nil
}

// newClient opens a client of the cluster with extra options, its
// connection settings from the process environment.
func (c Cluster) newClient(extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := c.options(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("open kafka client: %w", err)
	}
	return cl, nil
}

// topicInfo is what a plan or a commit needs of a topic.
type topicInfo struct {
	id         [16]byte
	partitions []int32
}

// describeTopic returns the partitions of topic; a topic that does not
// exist is a permanent error.
func describeTopic(ctx context.Context, adm *kadm.Client, topic string) (topicInfo, error) {
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return topicInfo{}, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	td, ok := md.Topics[topic]
	if !ok {
		return topicInfo{}, fmt.Errorf("describe topic %s: not in the metadata", topic)
	}
	if td.Err != nil {
		if errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
			return topicInfo{}, permanentf("topic %s does not exist", topic)
		}
		return topicInfo{}, fmt.Errorf("describe topic %s: %w", topic, td.Err)
	}
	info := topicInfo{id: td.ID}
	for _, p := range td.Partitions.Sorted() {
		info.partitions = append(info.partitions, p.Partition)
	}
	if len(info.partitions) == 0 {
		return topicInfo{}, fmt.Errorf("describe topic %s: no partitions yet", topic)
	}
	return info, nil
}

// ensureTopic creates topic with partitions and configs unless it exists.
func ensureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, replication int16, configs map[string]*string) error {
	if replication == 0 {
		replication = -1
	}
	resp, err := adm.CreateTopic(ctx, partitions, replication, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	// A topic just created may take a moment to have its partitions'
	// leaders; wait for them.
	for range 50 {
		if _, err := describeTopic(ctx, adm, topic); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	_, err = describeTopic(ctx, adm, topic)
	return err
}

func permanentf(format string, args ...any) error {
	return permanent(fmt.Errorf(format, args...))
}
