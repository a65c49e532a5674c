//! The MDM check-in URL (`PUT /mdm/checkin`): enrollment, token updates,
//! check-out, bootstrap-token escrow and declarative management.

use serde_json::json;

use super::progress::Work;
use super::{ServiceError, ServiceResult, Services};
use crate::apple::mdm::{CheckinMessage, GetBootstrapTokenResponse, parse_checkin};
use crate::domain::{Actor, Device, EnrollmentState, EventType, OsVersion, Platform, Signal};
use crate::ports::{Change, CommandWrite, DeviceWrite, StoreError};

/// The body to send back for a check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckinReply {
    /// An empty 200.
    Empty,
    /// A plist body.
    Plist(Vec<u8>),
    /// A JSON body (declarative management).
    Json(Vec<u8>),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Services {
    pub async fn handle_checkin(&self, body: &[u8]) -> ServiceResult<CheckinReply> {
        let message = parse_checkin(body).map_err(|e| ServiceError::BadDeviceInput {
            message: e.to_string(),
        })?;
        let Some(udid) = message.udid().map(str::to_string) else {
            return Err(ServiceError::BadDeviceInput {
                message: format!(
                    "{} check-in has no UDID; user enrollments are not supported",
                    message.message_type()
                ),
            });
        };
        match message {
            CheckinMessage::Authenticate(auth) => {
                self.authenticate(&udid, &auth).await?;
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::TokenUpdate(update) => {
                self.token_update(&udid, &update).await?;
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::CheckOut(_) => {
                self.check_out(&udid).await?;
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::SetBootstrapToken(set) => {
                let token = set.bootstrap_token.clone().filter(|t| !t.is_empty());
                self.update_enrolled(&udid, |device| device.bootstrap_token = token.clone())
                    .await?;
                tracing::info!(device_id = %udid, present = token.is_some(), "bootstrap token escrowed");
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::GetBootstrapToken(_) => {
                let device = self.enrolled_device(&udid).await?;
                let reply = GetBootstrapTokenResponse {
                    bootstrap_token: device.bootstrap_token.clone(),
                };
                let body = crate::apple::to_plist_xml(&reply).map_err(|e| {
                    ServiceError::Store(StoreError::backend("encode bootstrap token", e))
                })?;
                Ok(CheckinReply::Plist(body))
            }
            CheckinMessage::DeclarativeManagement(ddm) => {
                let Some(context) = self.ports.devices.load_context(&udid).await? else {
                    return Err(ServiceError::not_enrolled(&udid));
                };
                if context.device.enrollment != EnrollmentState::Enrolled {
                    return Err(ServiceError::not_enrolled(&udid));
                }
                let body = self
                    .handle_declarative(context, &ddm.endpoint, ddm.data.as_deref())
                    .await?;
                Ok(CheckinReply::Json(body))
            }
        }
    }

    async fn authenticate(
        &self,
        udid: &str,
        auth: &crate::apple::mdm::Authenticate,
    ) -> ServiceResult<()> {
        let now = self.now();
        let model = auth.product_name.clone().or_else(|| auth.model.clone());
        let platform = model.as_deref().and_then(Platform::from_model_identifier);
        let os_version = auth
            .os_version
            .as_deref()
            .and_then(|v| v.parse::<OsVersion>().ok());
        for _ in 0..5 {
            let existing = self.ports.devices.get_device(udid).await?;
            let expected = existing.as_ref().map(|d| d.revision);
            let mut device = existing.unwrap_or_else(|| Device {
                udid: udid.to_string(),
                serial_number: None,
                name: None,
                model: None,
                model_name: None,
                platform: None,
                os_version: None,
                build_version: None,
                supervised: None,
                software_update_device_id: None,
                time_zone: None,
                enrollment: EnrollmentState::Authenticated,
                topic: None,
                push_token: None,
                push_magic: None,
                bootstrap_token: None,
                ddm_active: false,
                enrolled_at: now,
                last_seen_at: now,
                inventory_requested_at: None,
                current_operation_id: None,
                revision: 0,
            });
            device.enrollment = EnrollmentState::Authenticated;
            device.topic = Some(auth.topic.clone());
            device.push_token = None;
            device.push_magic = None;
            device.last_seen_at = now;
            if let Some(name) = &auth.device_name {
                device.name = Some(name.clone());
            }
            if let Some(serial) = &auth.serial_number {
                device.serial_number = Some(serial.clone());
            }
            if auth.model_name.is_some() {
                device.model_name = auth.model_name.clone();
            }
            if model.is_some() && platform.is_some() {
                device.model = model.clone();
                device.platform = platform;
            }
            if os_version.is_some() {
                device.os_version = os_version.clone();
                device.build_version = auth.build_version.clone();
            }
            let change = Change {
                device: Some(DeviceWrite {
                    device,
                    expected_revision: expected,
                }),
                ..Default::default()
            };
            match self.ports.devices.commit(change).await {
                Ok(_) => {
                    tracing::info!(device_id = %udid, "device authenticated");
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(busy(udid))
    }

    async fn token_update(
        &self,
        udid: &str,
        update: &crate::apple::mdm::TokenUpdate,
    ) -> ServiceResult<()> {
        let now = self.now();
        for _ in 0..5 {
            let Some(context) = self.ports.devices.load_context(udid).await? else {
                return Err(ServiceError::not_enrolled(udid));
            };
            if context.device.enrollment == EnrollmentState::CheckedOut {
                return Err(ServiceError::not_enrolled(udid));
            }
            let first = context.device.enrollment == EnrollmentState::Authenticated;
            let mut work = Work::new(context);
            let device = work.device_mut();
            device.enrollment = EnrollmentState::Enrolled;
            device.push_token = Some(hex(&update.token));
            device.push_magic = Some(update.push_magic.clone());
            device.topic = Some(update.topic.clone());
            device.last_seen_at = now;
            if first && let Some(command) = super::mdm::inventory_query(self, udid, now) {
                work.put_command(command);
            }
            match self.ports.devices.commit(work.into_change()).await {
                Ok(_) => {
                    if first {
                        tracing::info!(device_id = %udid, "device enrolled");
                        if let Some(device) = self.ports.devices.get_device(udid).await? {
                            self.ports.push.push(&[device]).await?;
                        }
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(busy(udid))
    }

    /// The device left management: its waiting target is cancelled and its
    /// queued commands dropped.
    async fn check_out(&self, udid: &str) -> ServiceResult<()> {
        for _ in 0..5 {
            let Some(context) = self.ports.devices.load_context(udid).await? else {
                return Err(ServiceError::not_enrolled(udid));
            };
            let mut work = Work::new(context);
            let queued: Vec<CommandWrite> = work
                .commands
                .iter()
                .map(|c| CommandWrite::Remove {
                    device_id: udid.to_string(),
                    uuid: c.uuid.clone(),
                })
                .collect();
            work.command_writes.extend(queued);
            work.apply(
                self,
                Signal::Cancel,
                Some("device left management".into()),
                json!({ "reason": "check_out" }),
            );
            if work.active_target().is_some() {
                work.event(
                    self,
                    EventType::ReportIgnored,
                    Actor::Device,
                    json!({ "reason": "device checked out while installing" }),
                );
            }
            let device = work.device_mut();
            device.enrollment = EnrollmentState::CheckedOut;
            device.push_token = None;
            device.push_magic = None;
            device.current_operation_id = None;
            match self.ports.devices.commit(work.into_change()).await {
                Ok(outcome) => {
                    self.record_state_changes(&outcome.state_changes).await?;
                    tracing::info!(device_id = %udid, "device checked out");
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(busy(udid))
    }

    async fn enrolled_device(&self, udid: &str) -> ServiceResult<Device> {
        match self.ports.devices.get_device(udid).await? {
            Some(device) if device.enrollment == EnrollmentState::Enrolled => Ok(device),
            _ => Err(ServiceError::not_enrolled(udid)),
        }
    }

    async fn update_enrolled(&self, udid: &str, update: impl Fn(&mut Device)) -> ServiceResult<()> {
        for _ in 0..5 {
            let mut device = self.enrolled_device(udid).await?;
            let revision = device.revision;
            update(&mut device);
            let change = Change {
                device: Some(DeviceWrite {
                    device,
                    expected_revision: Some(revision),
                }),
                ..Default::default()
            };
            match self.ports.devices.commit(change).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(busy(udid))
    }
}

fn busy(udid: &str) -> ServiceError {
    ServiceError::Conflict {
        code: "busy",
        message: format!(
            "device {udid} changed repeatedly while its check-in was recorded; send it again"
        ),
    }
}
