//! JWT tokens (`--auth-token jwt,...`): not built yet — such a flag is
//! refused at start (see `view::Tokens::from_flag`). The provider's shape,
//! for the view: `assign` signs a login, `info` reads a token.
pub struct JwtProvider;

impl JwtProvider {
    pub fn assign(&self, _user: &str, _revision: u64) -> Result<String, String> {
        Err("JWT tokens are not built yet".into())
    }

    pub fn info(&self, _token: &str) -> Option<(String, u64)> {
        None
    }
}
