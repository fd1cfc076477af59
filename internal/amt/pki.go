package amt

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"slices"

	"github.com/amtops/amtops/internal/wsman"
)

// Certificate is an AMT_PublicKeyCertificate in the device's store.
type Certificate struct {
	InstanceID  string // "Intel(r) AMT Certificate: Handle: N"
	Subject     string
	Issuer      string
	TrustedRoot bool
	DER         []byte
}

// KeyPair is an AMT_PublicPrivateKeyPair (only the public part is readable).
type KeyPair struct {
	InstanceID string // "Intel(r) AMT Key: Handle: N"
	PublicDER  []byte // DERKey: PKCS#1 RSAPublicKey or SubjectPublicKeyInfo, by firmware version
}

// RSAPublicKey decodes DERKey in either form firmware uses: PKCS#1
// RSAPublicKey on some versions, SubjectPublicKeyInfo on others.
func (k KeyPair) RSAPublicKey() (*rsa.PublicKey, error) {
	if pub, err := x509.ParsePKCS1PublicKey(k.PublicDER); err == nil {
		return pub, nil
	}
	pub, err := x509.ParsePKIXPublicKey(k.PublicDER)
	if err != nil {
		return nil, fmt.Errorf("amt: AMT_PublicPrivateKeyPair %q: DERKey is neither PKCS#1 nor SubjectPublicKeyInfo: %w", k.InstanceID, err)
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("amt: AMT_PublicPrivateKeyPair %q: DERKey holds a %T, want RSA", k.InstanceID, pub)
	}
	return rk, nil
}

func parseCertificate(n *wsman.Node) (Certificate, error) {
	f := read(n, "AMT_PublicKeyCertificate")
	c := Certificate{
		InstanceID: f.str("InstanceID"),
		Subject:    f.str("Subject"),
		Issuer:     f.str("Issuer"),
		DER:        f.b64("X509Certificate"),
	}
	// AMT spells the property "TrustedRootCertficate"; accept the correct
	// spelling too in case a firmware fixes it.
	if n.Has("TrustedRootCertficate") {
		c.TrustedRoot = f.bool("TrustedRootCertficate")
	} else {
		c.TrustedRoot = f.bool("TrustedRootCertificate")
	}
	return c, f.err
}

func parseKeyPair(n *wsman.Node) (KeyPair, error) {
	f := read(n, "AMT_PublicPrivateKeyPair")
	k := KeyPair{InstanceID: f.str("InstanceID"), PublicDER: f.b64("DERKey")}
	return k, f.err
}

// AddTrustedRootCertificate installs a CA certificate (DER) as trusted root
// and returns its InstanceID.
func (c *Client) AddTrustedRootCertificate(ctx context.Context, der []byte) (string, error) {
	const op = "add trusted root certificate"
	out, err := c.invoke(ctx, op, URIPublicKeyManagement, "AddTrustedRootCertificate", nil,
		field("CertificateBlob", base64.StdEncoding.EncodeToString(der)))
	if err != nil {
		return "", err
	}
	return createdRef(op, out, "CreatedCertificate")
}

// AddCertificate installs a (leaf or intermediate) certificate (DER) and
// returns its InstanceID. A leaf's key must already be on the device.
func (c *Client) AddCertificate(ctx context.Context, der []byte) (string, error) {
	const op = "add certificate"
	out, err := c.invoke(ctx, op, URIPublicKeyManagement, "AddCertificate", nil,
		field("CertificateBlob", base64.StdEncoding.EncodeToString(der)))
	if err != nil {
		return "", err
	}
	return createdRef(op, out, "CreatedCertificate")
}

// AddKey installs an RSA private key (PKCS#1 DER) and returns its
// InstanceID. A refusal as duplicate (2058; Intel's documentation of
// AddKey also names 2068, which is NOT_FOUND everywhere else) is checked
// against the store: when the key is listed its InstanceID is returned,
// otherwise the refusal stands. A repeated install is thereby idempotent
// without ever taking NOT_FOUND for "already there".
func (c *Client) AddKey(ctx context.Context, pkcs1DER []byte) (string, error) {
	const op = "add key"
	out, err := c.invoke(ctx, op, URIPublicKeyManagement, "AddKey", nil,
		field("KeyBlob", base64.StdEncoding.EncodeToString(pkcs1DER)))
	if wsman.IsReturnValue(err, wsman.StatusDuplicate, wsman.StatusNotFound) {
		if key, perr := x509.ParsePKCS1PrivateKey(pkcs1DER); perr == nil {
			if id, ferr := c.FindKey(ctx, &key.PublicKey); ferr == nil && id != "" {
				return id, nil
			}
		}
	}
	if err != nil {
		return "", err
	}
	return createdRef(op, out, "CreatedKey")
}

// KeyAlgorithmRSA is GenerateKeyPair's KeyAlgorithm for RSA.
const KeyAlgorithmRSA = 0

// GenerateKeyPair makes the device generate an RSA key (bits: 2048 on every
// firmware) and returns the key's InstanceID; the private key never leaves.
func (c *Client) GenerateKeyPair(ctx context.Context, bits int) (string, error) {
	const op = "generate key pair"
	out, err := c.invoke(ctx, op, URIPublicKeyManagement, "GenerateKeyPair", nil,
		intField("KeyAlgorithm", KeyAlgorithmRSA), intField("KeyLength", bits))
	if err != nil {
		return "", err
	}
	return createdRef(op, out, "KeyPair")
}

// SigningAlgorithmSHA256RSA is GeneratePKCS10RequestEx's SigningAlgorithm
// for SHA-256 with RSA (0 is SHA-1).
const SigningAlgorithmSHA256RSA = 1

// GeneratePKCS10RequestEx has the device sign a CSR with the key keyID.
// nullSigned is a DER PKCS#10 request carrying the key's public part and
// the wanted subject, with an empty signature. The device's answer is
// returned as sent (base64 DER); it is the caller's to decode.
func (c *Client) GeneratePKCS10RequestEx(ctx context.Context, keyID string, nullSigned []byte, signingAlgorithm int) (string, error) {
	out, err := c.invoke(ctx, "generate pkcs10 request", URIPublicKeyManagement, "GeneratePKCS10RequestEx", nil,
		ref("KeyPair", URIPublicPrivateKeyPair, "InstanceID", keyID),
		intField("SigningAlgorithm", signingAlgorithm),
		field("NullSignedCertificateRequest", base64.StdEncoding.EncodeToString(nullSigned)))
	if err != nil {
		return "", err
	}
	csr := out.Get("SignedCertificateRequest")
	if csr == "" {
		return "", fmt.Errorf("amt: generate pkcs10 request: %w: empty SignedCertificateRequest", wsman.ErrMalformed)
	}
	return csr, nil
}

// Certificates lists the device's certificate store.
func (c *Client) Certificates(ctx context.Context) ([]Certificate, error) {
	items, err := c.enumerate(ctx, "enumerate certificates", URIPublicKeyCertificate)
	if err != nil {
		return nil, err
	}
	out := make([]Certificate, 0, len(items))
	for _, it := range items {
		cert, err := parseCertificate(it)
		if err != nil {
			return nil, err
		}
		out = append(out, cert)
	}
	return out, nil
}

// Keys lists the device's key pairs.
func (c *Client) Keys(ctx context.Context) ([]KeyPair, error) {
	items, err := c.enumerate(ctx, "enumerate keys", URIPublicPrivateKeyPair)
	if err != nil {
		return nil, err
	}
	out := make([]KeyPair, 0, len(items))
	for _, it := range items {
		k, err := parseKeyPair(it)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// DeleteCertificate removes a certificate by InstanceID.
func (c *Client) DeleteCertificate(ctx context.Context, instanceID string) error {
	if err := c.ws.Delete(ctx, URIPublicKeyCertificate, sel("InstanceID", instanceID)...); err != nil {
		return fmt.Errorf("amt: delete certificate %q: %w", instanceID, err)
	}
	return nil
}

// DeleteKey removes a key pair by InstanceID.
func (c *Client) DeleteKey(ctx context.Context, instanceID string) error {
	if err := c.ws.Delete(ctx, URIPublicPrivateKeyPair, sel("InstanceID", instanceID)...); err != nil {
		return fmt.Errorf("amt: delete key %q: %w", instanceID, err)
	}
	return nil
}

// DeleteCertificateAndKey deletes certificate certID and, unless it is a
// trusted root, the key pair holding the certificate's public key: what a
// TLS or 802.1X change replaced, so repeated changes never fill the
// stores (23). Either already gone counts as deleted. The certificate the
// TLS listener serves is refused: delete after binding its successor.
func (c *Client) DeleteCertificateAndKey(ctx context.Context, certID string) error {
	bound, err := c.TLSCredentialContexts(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(bound, certID) {
		return fmt.Errorf("amt: delete certificate %q: it is the TLS certificate in use", certID)
	}
	certs, err := c.Certificates(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(certs, func(x Certificate) bool { return x.InstanceID == certID })
	if i < 0 {
		return nil
	}
	cert := certs[i]
	if err := c.DeleteCertificate(ctx, certID); err != nil {
		return err
	}
	if cert.TrustedRoot {
		return nil
	}
	leaf, err := x509.ParseCertificate(cert.DER)
	if err != nil {
		return fmt.Errorf("amt: delete certificate %q: its key is left: X509Certificate: %w", certID, err)
	}
	keyID, err := c.FindKey(ctx, leaf.PublicKey)
	if err != nil || keyID == "" {
		return err
	}
	return c.DeleteKey(ctx, keyID)
}

// FindKey returns the InstanceID of the key pair whose public key is pub,
// or "" when the store has none. A caller whose AddKey was refused (2058
// duplicate; Intel's own documentation also names 2068 there, which is
// NOT_FOUND elsewhere) checks with it whether the key really is on the
// device rather than assuming so.
func (c *Client) FindKey(ctx context.Context, pub crypto.PublicKey) (string, error) {
	want, ok := pub.(*rsa.PublicKey)
	if !ok {
		return "", fmt.Errorf("amt: find key: %T is not an RSA public key", pub)
	}
	keys, err := c.Keys(ctx)
	if err != nil {
		return "", err
	}
	for _, k := range keys {
		if have, err := k.RSAPublicKey(); err == nil && have.Equal(want) {
			return k.InstanceID, nil
		}
	}
	return "", nil
}
