"""Development helpers: the Keycloak-compatible issuer and the throwaway database."""
