package stepca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/amtops/amtops/internal/domain"
)

// tokenLifetime is how long a one-time token is valid; step-ca allows a
// minute of clock skew on top.
const tokenLifetime = 5 * time.Minute

// tokenSigner signs one-time tokens with the provisioner's private key.
type tokenSigner struct {
	issuer string
	signer jose.Signer
}

// ottClaims are the claims step-ca's JWK provisioner checks, plus
// amtops_profile, which the provisioner's template may read (.Token).
type ottClaims struct {
	jwt.Claims
	SANs    []string `json:"sans,omitempty"`
	SHA     string   `json:"sha"`
	Profile string   `json:"amtops_profile,omitempty"`
}

func (s *tokenSigner) token(now time.Time, subject string, sans []string, audience, rootSHA, profile string) (string, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	c := ottClaims{
		Claims: jwt.Claims{
			Issuer:    s.issuer,
			Subject:   subject,
			Audience:  jwt.Audience{audience},
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			Expiry:    jwt.NewNumericDate(now.Add(tokenLifetime)),
			ID:        hex.EncodeToString(id),
		},
		SANs:    sans,
		SHA:     rootSHA,
		Profile: profile,
	}
	tok, err := jwt.Signed(s.signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

// caConfig is the part of step-ca's ca.json read here.
type caConfig struct {
	Authority struct {
		Provisioners []struct {
			Type         string          `json:"type"`
			Name         string          `json:"name"`
			Key          json.RawMessage `json:"key"`
			EncryptedKey string          `json:"encryptedKey"`
		} `json:"provisioners"`
	} `json:"authority"`
}

// loadProvisioner finds the JWK provisioner name in ca.json and decrypts
// its key (JWE with PBES2, as the step CLI writes it) with password.
func loadProvisioner(path, name, password string) (*tokenSigner, error) {
	if path == "" {
		return nil, domain.InvalidField("ca_config_file", "", "required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("stepca: read ca_config_file: %w", err)
	}
	var cfg caConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, domain.InvalidField("ca_config_file", path, "not step-ca's ca.json: "+err.Error())
	}
	for _, p := range cfg.Authority.Provisioners {
		if p.Name != name || p.Type != "JWK" {
			continue
		}
		if p.EncryptedKey == "" {
			return nil, domain.InvalidField("provisioner", name, "has no encryptedKey in "+path)
		}
		var pub jose.JSONWebKey
		if err := pub.UnmarshalJSON(p.Key); err != nil {
			return nil, domain.InvalidField("provisioner", name, "bad public key: "+err.Error())
		}
		jwk, err := decryptKey(p.EncryptedKey, password)
		if err != nil {
			return nil, err
		}
		// step-ca finds the provisioner by issuer and the token's kid.
		jwk.KeyID = pub.KeyID
		signer, err := newSigner(jwk)
		if err != nil {
			return nil, fmt.Errorf("stepca: provisioner %s: %w", name, err)
		}
		return &tokenSigner{issuer: name, signer: signer}, nil
	}
	return nil, domain.InvalidField("provisioner", name, "no JWK provisioner of that name in "+path)
}

func decryptKey(encrypted, password string) (*jose.JSONWebKey, error) {
	obj, err := jose.ParseEncryptedCompact(encrypted,
		[]jose.KeyAlgorithm{jose.PBES2_HS256_A128KW, jose.PBES2_HS384_A192KW, jose.PBES2_HS512_A256KW},
		[]jose.ContentEncryption{jose.A128GCM, jose.A192GCM, jose.A256GCM, jose.A128CBC_HS256, jose.A192CBC_HS384, jose.A256CBC_HS512})
	if err != nil {
		return nil, domain.InvalidField("provisioner.encryptedKey", "", "not a JWE: "+err.Error())
	}
	plain, err := obj.Decrypt([]byte(password))
	if err != nil {
		// Says nothing of the password beyond that it did not fit.
		return nil, domain.InvalidField("password_file", "", "does not decrypt the provisioner key")
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(plain); err != nil || jwk.IsPublic() {
		return nil, domain.InvalidField("provisioner.encryptedKey", "", "does not hold a private JWK")
	}
	return &jwk, nil
}

func newSigner(jwk *jose.JSONWebKey) (jose.Signer, error) {
	alg := jose.SignatureAlgorithm(jwk.Algorithm)
	if alg == "" {
		switch k := jwk.Key.(type) {
		case *ecdsa.PrivateKey:
			switch k.Curve {
			case elliptic.P256():
				alg = jose.ES256
			case elliptic.P384():
				alg = jose.ES384
			case elliptic.P521():
				alg = jose.ES512
			}
		case *rsa.PrivateKey:
			alg = jose.RS256
		case ed25519.PrivateKey:
			alg = jose.EdDSA
		}
	}
	if alg == "" {
		return nil, fmt.Errorf("key type %T not supported", jwk.Key)
	}
	return jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"))
}
