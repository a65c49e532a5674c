//! [`GroupStore`]: a group's partition contains its META item and one item
//! per member, and `members_by_device` finds a device's groups.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};

use super::DynamoStore;
use super::codec::{
    GROUP_ID, GROUP_LIST, GROUP_LIST_PARTITION, MEMBER_GROUP, MEMBER_PREFIX, MEMBER_UDID, META, PK,
    SK, decode_group, group_item, group_pk, key, member_sk, require_s, s,
};
use super::cursor::{self, CursorScope};
use super::devices::page_limit;
use super::read::{QuerySpec, batch_get, batch_write, get_item, query_all, query_many, query_page};
use super::schema::{GROUPS_BY_ID, MEMBERS_BY_DEVICE};
use super::write::{WriteFailure, WriteOp, write_all};
use crate::domain::Group;
use crate::ports::{GroupStore, Page, PageRequest, StoreError, StoreResult};

#[async_trait]
impl GroupStore for DynamoStore {
    async fn create_group(&self, group: &Group) -> StoreResult<()> {
        let write = WriteOp::put(&self.tables.state, group_item(group)?)
            .when(|e| format!("attribute_not_exists({})", e.name(PK)));
        write_all(&self.client, vec![write], "create group")
            .await
            .map_err(|failure| {
                failure.into_store_error("create group", || {
                    format!("group {} already exists", group.id)
                })
            })
    }

    async fn get_group(&self, id: &str) -> StoreResult<Option<Group>> {
        get_item(
            &self.client,
            &self.tables.state,
            key(group_pk(id), META),
            "read group",
        )
        .await?
        .map(|item| decode_group(&item))
        .transpose()
    }

    async fn update_group(&self, group: &Group) -> StoreResult<()> {
        let write = WriteOp::put(&self.tables.state, group_item(group)?)
            .when(|e| format!("attribute_exists({})", e.name(PK)));
        match write_all(&self.client, vec![write], "update group").await {
            Ok(()) => Ok(()),
            Err(WriteFailure::Cancelled(_)) => {
                Err(StoreError::NotFound(format!("group {}", group.id)))
            }
            Err(WriteFailure::Store(error)) => Err(error),
        }
    }

    /// Queries `groups_by_id`, in id order.
    async fn list_groups(&self, page: &PageRequest) -> StoreResult<Page<Group>> {
        let scope = CursorScope {
            list: "groups",
            attributes: &[PK, SK, GROUP_LIST, GROUP_ID],
            partition: (GROUP_LIST, GROUP_LIST_PARTITION),
        };
        let mut spec = QuerySpec::index(
            &self.tables.state,
            GROUPS_BY_ID,
            GROUP_LIST,
            GROUP_LIST_PARTITION,
        );
        spec.limit = Some(page_limit(page));
        spec.start = cursor::start(&scope, page.cursor.as_deref())?;
        let (items, last) = query_page(&self.client, &spec, "list groups").await?;
        Ok(Page {
            items: items
                .iter()
                .map(decode_group)
                .collect::<StoreResult<Vec<_>>>()?,
            next_cursor: cursor::next(&scope, last)?,
        })
    }

    /// Reads the current members, then deletes and puts only the difference
    /// with BatchWriteItem.
    ///
    /// NOTE: not atomic, unlike the SQLite store: a failure part way leaves
    /// some members changed, and two concurrent calls can interleave. A
    /// repeated call converges on the list it sets.
    async fn set_members(&self, group_id: &str, udids: &[String]) -> StoreResult<()> {
        let current: BTreeSet<String> = self.members(group_id).await?.into_iter().collect();
        let requested: BTreeSet<String> = udids.iter().cloned().collect();
        let mut requests = Vec::new();
        for udid in current.difference(&requested) {
            let delete = DeleteRequest::builder()
                .set_key(Some(key(group_pk(group_id), member_sk(udid))))
                .build()
                .map_err(|e| StoreError::backend("set group members", e))?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        for udid in requested.difference(&current) {
            let mut item = key(group_pk(group_id), member_sk(udid));
            item.insert(MEMBER_UDID.into(), s(udid.clone()));
            item.insert(MEMBER_GROUP.into(), s(group_id));
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| StoreError::backend("set group members", e))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        batch_write(
            &self.client,
            &self.tables.state,
            requests,
            "set group members",
        )
        .await
    }

    /// Reads the members with a consistent Query of the group's member items, in UDID order.
    async fn members(&self, group_id: &str) -> StoreResult<Vec<String>> {
        let spec = QuerySpec::partition(&self.tables.state, PK, &group_pk(group_id))
            .and_key(|e| format!("begins_with({}, {})", e.name(SK), e.value(s(MEMBER_PREFIX))));
        let items = query_all(&self.client, spec, "read group members").await?;
        items
            .iter()
            .map(|item| require_s(item, "member", MEMBER_UDID).map(str::to_string))
            .collect()
    }

    /// Queries `members_by_device` once per device (16 at a time), then reads
    /// the groups in BatchGetItem calls.
    async fn groups_of(&self, udids: &[String]) -> StoreResult<Vec<(String, Group)>> {
        let unique: Vec<String> = udids
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let specs = unique
            .iter()
            .map(|udid| QuerySpec::index(&self.tables.state, MEMBERS_BY_DEVICE, MEMBER_UDID, udid))
            .collect();
        let memberships = query_many(&self.client, specs, "read device groups").await?;
        let mut group_ids_of: HashMap<&str, Vec<String>> = HashMap::new();
        let mut all_groups = BTreeSet::new();
        for (udid, items) in unique.iter().zip(&memberships) {
            let mut ids = items
                .iter()
                .map(|item| require_s(item, "member", MEMBER_GROUP).map(str::to_string))
                .collect::<StoreResult<Vec<_>>>()?;
            ids.sort();
            all_groups.extend(ids.iter().cloned());
            group_ids_of.insert(udid, ids);
        }
        let keys = all_groups
            .iter()
            .map(|id| key(group_pk(id), META))
            .collect();
        let groups: HashMap<String, Group> =
            batch_get(&self.client, &self.tables.state, keys, "read device groups")
                .await?
                .iter()
                .map(|item| decode_group(item).map(|g| (g.id.clone(), g)))
                .collect::<StoreResult<_>>()?;
        let mut found = Vec::new();
        for udid in udids {
            for group_id in group_ids_of.get(udid.as_str()).into_iter().flatten() {
                if let Some(group) = groups.get(group_id) {
                    found.push((udid.clone(), group.clone()));
                }
            }
        }
        Ok(found)
    }
}
