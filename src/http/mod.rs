//! Thin actix-web handlers: parse at the door, call the shell, answer the envelope.

mod admin;
mod body;
mod client_ip;
mod envelope;
mod error;
mod my_account;
mod my_factors;
mod rate_limit;
mod signin;
mod well_known;

pub use admin::{AdminApi, AdminParts};
pub use body::StepBody;
pub use client_ip::TrustedProxies;
pub use envelope::Envelope;
pub use error::{ApiError, ErrorKind};
pub use my_account::MyAccount;
pub use rate_limit::IpLimiter;

use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::web;

/// Every route the service answers; the admin API's only when it is on,
/// with its own limiter.
pub fn routes(cfg: &mut web::ServiceConfig, admin_limiter: Option<web::Data<IpLimiter>>) {
    cfg.service(
        web::scope("/api/v2/my")
            .wrap(from_fn(rate_limit::limit_by_ip))
            .route("/signin/wizard", web::get().to(signin::start))
            .route("/signin/wizard/spec", web::get().to(well_known::spec))
            .route("/signin", web::post().to(signin::credentials))
            .route("/signin/2fa", web::post().to(signin::choose_factor))
            .route("/2fa/google", web::post().to(signin::totp_code))
            .route("/2fa/google/enroll", web::post().to(signin::enroll_totp))
            .route("/2fa/backup_code", web::post().to(signin::backup_code))
            .route("/2fa/sms", web::post().to(signin::sms_code))
            .route("/2fa/sms/resend", web::post().to(signin::resend_sms))
            .route(
                "/signin/password/restore",
                web::post().to(signin::restore_password),
            )
            .route(
                "/signin/password/reset",
                web::post().to(signin::reset_password),
            )
            .route("/refresh", web::post().to(my_account::refresh))
            .route("/me", web::get().to(my_account::me))
            .route("/sessions", web::get().to(my_account::sessions))
            .route(
                "/sessions/revoke-all",
                web::post().to(my_account::end_all_sessions),
            )
            .route("/sessions/{id}", web::delete().to(my_account::end_session))
            .route("/signout", web::post().to(my_account::sign_out))
            .route("/account/2fa", web::get().to(my_factors::status))
            .route(
                "/account/2fa/google/setup",
                web::post().to(my_factors::set_up_totp),
            )
            .route(
                "/account/2fa/google/enable",
                web::post().to(my_factors::enable_totp),
            )
            .route(
                "/account/2fa/google/disable",
                web::post().to(my_factors::disable_totp),
            )
            .route("/account/2fa/sms", web::post().to(my_factors::add_phone))
            .route(
                "/account/2fa/sms/confirm",
                web::post().to(my_factors::confirm_phone),
            )
            .route(
                "/account/2fa/sms/disable",
                web::post().to(my_factors::remove_phone),
            )
            .route(
                "/account/2fa/backup-codes",
                web::post().to(my_factors::renew_backup_codes),
            ),
    )
    .route("/.well-known/jwks.json", web::get().to(well_known::jwks))
    .route("/healthz", web::get().to(well_known::health))
    .route("/api/openapi.json", web::get().to(well_known::openapi));
    if let Some(limiter) = admin_limiter {
        cfg.service(
            web::scope("/api/v2/admin")
                // Its own limiter (see `startup`), which this scope's app data puts
                // in place of the wizard's for the middleware below.
                .app_data(limiter)
                .wrap(from_fn(rate_limit::limit_by_ip))
                // Answers can carry an otpauth:// URI, which holds a TOTP secret.
                .wrap(DefaultHeaders::new().add(("Cache-Control", "no-store")))
                .route("/users", web::post().to(admin::create_user))
                .route("/users/{id}", web::get().to(admin::get_user))
                .route("/users/{id}", web::patch().to(admin::update_user))
                .route("/users/{id}", web::delete().to(admin::delete_user))
                .route("/users/{id}/unlock", web::post().to(admin::unlock_user))
                .route("/users/{id}/sessions", web::get().to(admin::list_sessions))
                .route(
                    "/users/{id}/sessions",
                    web::delete().to(admin::end_user_sessions),
                )
                .route(
                    "/users/{id}/sessions/{session}",
                    web::delete().to(admin::end_user_session),
                )
                .route("/keys", web::get().to(admin::list_keys))
                .route("/keys/rotate", web::post().to(admin::rotate_keys))
                .route("/settings", web::get().to(admin::get_settings))
                .route("/settings", web::put().to(admin::put_settings))
                .route("/store", web::get().to(admin::store_stats)),
        );
    }
    cfg.default_service(web::to(error::unknown_route));
}
